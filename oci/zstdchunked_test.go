package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.podman.io/storage/pkg/chunked/compressor"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/oci/chunked"
	"github.com/mossfs/mossfs/oci/layer"
	"github.com/mossfs/mossfs/tree"
)

// chunkedTree is a tree whose contents meet every cut of the zstd:chunked
// writer: random data long enough for several rolling-sum chunks, runs of
// zeros just under and over the hole threshold (at the start, the middle
// and the end), a rolling-sum split on the last byte and right before a
// hole (the empty frames containers/storage leaves), empty files,
// hardlinks, xattrs, devices, fifos, symlinks, long names, inline contents
// and files past bigFile (the ordered writer's streaming path, with zeros
// across its pieces). Payloads
// live in objects under dir.
func chunkedTree(t testing.TB, dir string) *tree.Node {
	t.Helper()
	r := rand.New(rand.NewSource(7))
	random := func(n int) []byte {
		b := make([]byte, n)
		r.Read(b)
		return b
	}
	zeros := func(n int) []byte { return make([]byte, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// The first rolling-sum split of some random data: a content cut there
	// ends exactly on a split.
	var atSplit []byte
	for atSplit == nil {
		d := random(1 << 20)
		rs := compressor.NewRollSum()
		for i, b := range d {
			rs.Roll(b)
			if rs.OnSplitWithBits(compressor.RollsumBits) && i > 1000 {
				atSplit = d[:i+1]
				break
			}
		}
	}
	contents := map[string][]byte{
		"random-3M":           random(3 << 20),
		"random-small":        random(5000),
		"compressible":        bytes.Repeat([]byte("mossfs exports layers. "), 40000),
		"hole-start":          cat(zeros(5000), random(70000)),
		"hole-middle":         cat(random(100000), zeros(1<<20), random(100000)),
		"hole-end":            cat(random(3000), zeros(4096)),
		"hole-exact":          cat(random(10), zeros(chunkedHolesThreshold), random(10)),
		"short-zeros":         cat(random(10), zeros(chunkedHolesThreshold-1), random(10), zeros(chunkedHolesThreshold-1)),
		"all-zeros":           zeros(300000),
		"split-at-end":        atSplit,
		"split-before-hole":   cat(atSplit, zeros(2000), random(100)),
		"split-before-zeros":  cat(atSplit, zeros(100), random(100)),
		"one-byte":            {1},
		"zero-byte":           {0},
		"big-random-and-hole": cat(random(bigFile), zeros(3000), random(200000)),
		// Streamed in pieces: zeros under and over the hole threshold
		// across a piece's end.
		"big-zeros-across-pieces": cat(random(bigFile-700), zeros(1000), random(pieceSize-1300), zeros(3000), random(pieceSize), zeros(pieceSize+10), random(5)),
	}
	root := tree.NewDir("", 0o755)
	mt := tree.Timespec{Sec: 1700000000, Nsec: 123456789}
	add := func(parent *tree.Node, n *tree.Node) *tree.Node {
		n.Mtime = mt
		parent.AddChild(n)
		return n
	}
	d := add(root, tree.NewDir("d", 0o755))
	sub := add(d, tree.NewDir("sub", 0o700))
	sub.SetXattr("user.dir", []byte("x"))
	objects := filepath.Join(dir, "objects")
	i := 0
	for name, c := range contents {
		h := sha256.Sum256(c)
		obj := fmt.Sprintf("%02x/%x", h[0], h[1:])
		if err := os.MkdirAll(filepath.Join(objects, obj[:2]), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(objects, obj), c, 0o644); err != nil {
			t.Fatal(err)
		}
		dg := fsverity.Sum(c)
		f := add(d, &tree.Node{Name: name, Mode: tree.TypeReg | 0o644, UID: uint32(i), GID: 7, Size: uint64(len(c)), Payload: obj, Digest: dg[:], Nlink: 1})
		if i%3 == 0 {
			f.SetXattr("user.k", []byte{0, 1, 2, byte(i)})
		}
		i++
	}
	add(d, &tree.Node{Name: "empty", Mode: tree.TypeReg | 0o600, Nlink: 1})
	add(d, &tree.Node{Name: "inline", Mode: tree.TypeReg | 0o600, Size: 5, Content: []byte("hello"), Nlink: 1})
	big := bytes.Repeat([]byte{1, 0, 2}, 100) // inline, past layer.InlineMax
	add(sub, &tree.Node{Name: "inline-big", Mode: tree.TypeReg | 0o4755, Size: uint64(len(big)), Content: big, Nlink: 1})
	d.SortChildren()
	add(sub, &tree.Node{Name: "hardlink", LinkTo: d.Child("random-small")})
	add(sub, &tree.Node{Name: "hardlink-empty", LinkTo: d.Child("empty")})
	add(sub, &tree.Node{Name: "link", Mode: tree.TypeLink | 0o777, Target: "../random-small", Size: 15})
	add(sub, &tree.Node{Name: "null", Mode: tree.TypeChar | 0o666, Rdev: 1<<8 | 3})
	add(sub, &tree.Node{Name: "fifo", Mode: tree.TypeFifo | 0o644})
	// PAX records for the owner and the name.
	add(sub, &tree.Node{Name: "bigid-ünï", Mode: tree.TypeReg | 0o644, UID: 3_000_000, GID: 1 << 30, Size: 2, Content: []byte("ok"), Nlink: 1})
	long := add(sub, tree.NewDir(string(bytes.Repeat([]byte("n"), 200)), 0o755))
	add(long, &tree.Node{Name: string(bytes.Repeat([]byte("f"), 250)), Mode: tree.TypeReg | 0o644, Size: 3, Content: []byte("abc"), Nlink: 1})
	// Headers only at the end: the last job has items.
	add(root, tree.NewDir("zz-last", 0o755))
	root.Sort()
	return root
}

// testObjects opens an object directory for the test's duration.
func testObjects(t testing.TB, dir string) ContentOpener {
	o, err := OpenObjectDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o.Open
}

func writeLayerBytes(t testing.TB, root *tree.Node, compression string, open ContentOpener, hooks layerHooks) ([]byte, *LayerBlob) {
	t.Helper()
	var out bytes.Buffer
	lb, err := writeLayer(&out, root, compression, open, hooks)
	if err != nil {
		t.Fatalf("%s: %v", compression, err)
	}
	return out.Bytes(), lb
}

// TestZstdChunkedAsContainersStorage: our parallel zstd:chunked writer,
// with ChunkRolling, writes byte for byte the blob and annotations that
// containers/storage's own compressor (compressor.ZstdCompressor at the
// same level) writes from our uncompressed tar, whatever the number of
// workers; the diff_id is the tar's sha256. (TestZstdChunkedFiles holds
// ChunkFiles to this layer.)
func TestZstdChunkedAsContainersStorage(t *testing.T) {
	// containers/storage writes modification times in the local zone.
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.UTC
	dir := t.TempDir()
	root := chunkedTree(t, dir)
	open := testObjects(t, filepath.Join(dir, "objects"))

	plain, plainLB := writeLayerBytes(t, root, CompressionNone, open, layerHooks{})
	var want bytes.Buffer
	wantAnn := map[string]string{}
	lvl := zstdLevel
	zc, err := compressor.ZstdCompressor(&want, wantAnn, &lvl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zc.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zc.Close(); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(plain) != plainLB.DiffID || plainLB.Digest != plainLB.DiffID {
		t.Fatal("uncompressed layer: digest or diff_id is not the tar's sha256")
	}
	for _, workers := range []int{1, 2, 5} {
		got, lb := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{workers: workers, chunking: ChunkRolling})
		if !bytes.Equal(got, want.Bytes()) {
			n := 0
			for n < min(len(got), want.Len()) && got[n] == want.Bytes()[n] {
				n++
			}
			t.Fatalf("workers=%d: blob of %d bytes differs from containers/storage's (%d bytes) at byte %d\n%x\n%x", workers, len(got), want.Len(), n, got[max(0, n-40):min(len(got), n+40)], want.Bytes()[max(0, n-40):min(want.Len(), n+40)])
		}
		if fmt.Sprint(lb.Annotations) != fmt.Sprint(wantAnn) {
			t.Errorf("workers=%d: annotations %v, containers/storage %v", workers, lb.Annotations, wantAnn)
		}
		if lb.DiffID != plainLB.DiffID || lb.Digest != sha256.Sum256(got) || lb.Size != int64(len(got)) || lb.Entries != plainLB.Entries {
			t.Errorf("workers=%d: diff_id, digest, size or entries wrong", workers)
		}
	}
	// The other compressions carry the same tar, whatever the workers and
	// the CPUs.
	for _, c := range []string{CompressionZstd, CompressionGzip} {
		a, la := writeLayerBytes(t, root, c, open, layerHooks{workers: 1})
		procs := runtime.GOMAXPROCS(1)
		b, lb := writeLayerBytes(t, root, c, open, layerHooks{workers: 4})
		runtime.GOMAXPROCS(procs)
		if !bytes.Equal(a, b) || la.DiffID != plainLB.DiffID || lb.DiffID != plainLB.DiffID {
			t.Errorf("%s: bytes depend on the workers or CPUs, or the diff_id is not the tar's", c)
		}
	}
}

// TestLayerVerityHook: the entries the export hands the applier (the tar
// headers it wrote, small contents, and for the larger contents the
// digests: the store's records, or computed where the tree has none) give
// the composefs image that an applier parsing the real tar and hashing
// every content gives, and a digest is told for exactly the contents the
// applier stores.
func TestLayerVerityHook(t *testing.T) {
	dir := t.TempDir()
	root := chunkedTree(t, dir)
	open := testObjects(t, filepath.Join(dir, "objects"))
	for _, c := range []string{CompressionZstdChunked, CompressionNone} {
		hashed := newComposefsOf(false)
		told := newComposefsOf(true)
		pr1, pw1 := io.Pipe()
		feed := newEntryFeed()
		errs := make(chan error, 2)
		go func() { errs <- hashed.apply(pr1, "hashed"); io.Copy(io.Discard, pr1) }()
		go func() {
			err := told.applyEntries(feed, "told")
			feed.drain()
			errs <- err
		}()
		_, err := writeLayer(io.Discard, root, c, open, layerHooks{tee: pw1, entries: feed, workers: 3})
		pw1.CloseWithError(err)
		feed.close()
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		n := told.told.n
		_, want, err := hashed.image()
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := told.image()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: composefs image from told digests %x, from hashing %x", c, got, want)
		}
		stored := 0
		hashed.ap.Root.Walk(func(n *tree.Node) error {
			if n.LinkTo == nil && n.Type() == tree.TypeReg && n.Size > layer.InlineMax {
				stored++
			}
			return nil
		})
		if n != stored || n < 10 {
			t.Errorf("%s: %d digests told, the applier stored %d files", c, n, stored)
		}
	}
}

// TestRollSum: the writer's rolling sum splits where containers/storage's does.
func TestRollSum(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	data := make([]byte, 4<<20)
	r.Read(data)
	for i := range data {
		if i%1000 < 300 {
			data[i] = 0
		}
	}
	theirs := compressor.NewRollSum()
	ours := newRollSum()
	splits := 0
	for i, b := range data {
		theirs.Roll(b)
		split := ours.roll(b)
		if split != theirs.OnSplitWithBits(compressor.RollsumBits) {
			t.Fatalf("byte %d: split %v, containers/storage's %v", i, split, !split)
		}
		if split {
			splits++
		}
	}
	if splits < 10 {
		t.Fatalf("only %d splits in %d bytes", splits, len(data))
	}
}

// bytesRanges serves a blob in memory to a partial pull.
type bytesRanges []byte

func (b bytesRanges) ReadRanges(_ context.Context, rs []chunked.Range, fn func(chunked.Range, io.Reader) error) error {
	for _, r := range rs {
		if err := fn(r, bytes.NewReader(b[r.Off:r.End()])); err != nil {
			return err
		}
	}
	return nil
}

// noContents is a store with no contents: a partial pull fetches every
// file and checks each against its TOC digest.
type noContents struct{}

func (noContents) HasSHA256([32]byte) bool { return false }
func (noContents) OpenSHA256([32]byte) (io.ReadCloser, error) {
	return nil, fs.ErrNotExist
}

// pullAll pulls a zstd:chunked layer partially from nothing (every file
// fetched and checked against its TOC digest, the tar against the diff_id).
func pullAll(t *testing.T, blob []byte, lb *LayerBlob) error {
	t.Helper()
	desc := chunked.Descriptor{Digest: fmt.Sprintf("sha256:%x", lb.Digest), Size: lb.Size, Annotations: lb.Annotations, DiffID: fmt.Sprintf("sha256:%x", lb.DiffID)}
	l, err := chunked.Prepare(context.Background(), bytesRanges(blob), desc, noContents{}, chunked.Options{TempDir: t.TempDir()})
	if err != nil {
		return err
	}
	defer l.Close()
	_, err = io.Copy(io.Discard, l.Tar())
	return err
}

// TestChunkedDigestsFromStoreRecord: the TOC digests the store records
// (layerHooks.shas: state's object sha256 log) take the place of hashing:
// with every content recorded, or some, the layer is byte for byte the one
// written hashing every content, and a partial pull of it checks out, in
// either Chunking. The
// record is trusted: a wrong one becomes the file's TOC digest (for a
// content of one chunk and of several alike), and a pull of that layer
// fails on that file's digest rather than taking its content; state's
// Verify reports such a record (TestObjectSHALog).
func TestChunkedDigestsFromStoreRecord(t *testing.T) {
	dir := t.TempDir()
	root := chunkedTree(t, dir)
	open := testObjects(t, filepath.Join(dir, "objects"))
	all := map[[32]byte][32]byte{}
	var multi, single [32]byte // objects of contents of several chunks (in both chunkings) and of one
	root.Walk(func(n *tree.Node) error {
		d, ok := knownVerity(n)
		if !ok {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(dir, "objects", n.Payload))
		if err != nil {
			t.Fatal(err)
		}
		all[d] = sha256.Sum256(b)
		switch n.Name {
		case "hole-middle":
			multi = d
		case "random-small":
			single = d
		}
		return nil
	})
	if len(all) < 15 {
		t.Fatalf("only %d contents in the tree", len(all))
	}
	some := map[[32]byte][32]byte{}
	i := 0
	for d, s := range all {
		if i%2 == 0 {
			some[d] = s
		}
		i++
	}
	for _, c := range []Chunking{ChunkFiles, ChunkRolling} {
		want, wantLB := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{chunking: c})
		if err := pullAll(t, want, wantLB); err != nil {
			t.Fatalf("%s: pull of the layer hashed throughout: %v", c, err)
		}
		for name, shas := range map[string]map[[32]byte][32]byte{"all": all, "some": some} {
			for _, workers := range []int{1, 3} {
				got, lb := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{shas: shas, workers: workers, chunking: c})
				if !bytes.Equal(got, want) || fmt.Sprint(lb.Annotations) != fmt.Sprint(wantLB.Annotations) || lb.DiffID != wantLB.DiffID {
					t.Errorf("%s: %s recorded, workers=%d: the layer differs from the one hashed throughout", c, name, workers)
				}
			}
		}
		for name, d := range map[string][32]byte{"several chunks": multi, "one chunk": single} {
			wrong := maps.Clone(all)
			s := wrong[d]
			s[0] ^= 1
			wrong[d] = s
			got, lb := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{shas: wrong, chunking: c})
			if bytes.Equal(got, want) {
				t.Fatalf("%s, %s: a wrong record left the layer as it was (not used?)", c, name)
			}
			err := pullAll(t, got, lb)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("does not match its digest sha256:%x", s)) {
				t.Errorf("%s, %s: pull of a layer with a wrong TOC digest: %v, want a digest mismatch of sha256:%x", c, name, err, s)
			}
		}
	}
}

// TestZstdChunkedFiles: a ChunkFiles layer differs from containers/storage's
// (ChunkRolling's, which TestZstdChunkedAsContainersStorage checks) only in
// its chunks and its compressed bytes: the whole blob decompresses to the
// same tar; the tar-split is the same JSON; the TOC has the same entries in
// the same order, with the same digests, and its contents are cut only
// around runs of zeros (a "zeros" chunk is such a run, no two other chunks
// meet, and each chunk's frames decompress to its bytes, of its digest);
// each file's range of frames decompresses to its content; the bytes do
// not depend on the workers; and a partial pull of it checks out.
func TestZstdChunkedFiles(t *testing.T) {
	dir := t.TempDir()
	root := chunkedTree(t, dir)
	open := testObjects(t, filepath.Join(dir, "objects"))
	plain, _ := writeLayerBytes(t, root, CompressionNone, open, layerHooks{})
	rolling, rollingLB := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{chunking: ChunkRolling})
	files, lb := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{workers: 1})
	for _, workers := range []int{2, 5} {
		got, glb := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{workers: workers, chunking: ChunkFiles})
		if !bytes.Equal(got, files) || fmt.Sprint(glb.Annotations) != fmt.Sprint(lb.Annotations) {
			t.Fatalf("workers=%d: the layer differs from one worker's", workers)
		}
	}
	if bytes.Equal(files, rolling) {
		t.Fatal("the files layer is the rolling one")
	}
	if lb.DiffID != rollingLB.DiffID || lb.Digest != sha256.Sum256(files) || lb.Size != int64(len(files)) {
		t.Fatal("diff_id, digest or size wrong")
	}
	if got := zstdDecode(t, files); !bytes.Equal(got, plain) {
		t.Fatalf("the blob decompresses to %d bytes that are not the tar's %d", len(got), len(plain))
	}
	contents := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(plain))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if contents[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	toc, split := chunkedMetaOf(t, files, lb)
	rtoc, rsplit := chunkedMetaOf(t, rolling, rollingLB)
	if !bytes.Equal(split, rsplit) {
		t.Error("the tar-split differs from containers/storage's")
	}
	// The entries but their places and chunks.
	placeless := func(toc *chunked.TOC) (out []chunked.Entry, chunks map[string][]chunked.Entry) {
		chunks = map[string][]chunked.Entry{}
		for _, e := range toc.Entries {
			chunks[e.Name] = append(chunks[e.Name], e)
			if e.Type == chunked.TypeChunk {
				continue
			}
			e.Offset, e.EndOffset, e.ChunkOffset, e.ChunkSize, e.ChunkDigest, e.ChunkType = 0, 0, 0, 0, "", ""
			out = append(out, e)
		}
		return out, chunks
	}
	got, chunks := placeless(toc)
	want, rchunks := placeless(rtoc)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TOC entries differ from containers/storage's:\n%v\n%v", got, want)
	}
	holes, multi := 0, 0
	for _, e := range toc.Entries {
		if e.Type != chunked.TypeReg || e.Size == 0 {
			continue
		}
		c := contents[e.Name]
		if d := zstdDecode(t, files[e.Offset:e.EndOffset]); !bytes.Equal(d, c) {
			t.Errorf("%s: its frames decompress to %d bytes that are not its %d", e.Name, len(d), len(c))
		}
		if len(rchunks[e.Name]) > 1 {
			multi++
		}
		cs := chunks[e.Name]
		if len(cs) == 1 {
			continue
		}
		for i, ch := range cs {
			b := c[ch.ChunkOffset : ch.ChunkOffset+ch.ChunkSize]
			end := e.EndOffset
			if i+1 < len(cs) {
				end = cs[i+1].Offset
			}
			if d := zstdDecode(t, files[ch.Offset:end]); !bytes.Equal(d, b) || ch.ChunkDigest != fmt.Sprintf("sha256:%x", sha256.Sum256(b)) {
				t.Errorf("%s: chunk %d: frames or digest wrong", e.Name, i)
			}
			zeros := len(b) >= chunkedHolesThreshold && !slices.ContainsFunc(b, func(x byte) bool { return x != 0 })
			if (ch.ChunkType == "zeros") != zeros {
				t.Errorf("%s: chunk %d of %d bytes: type %q, all zeros %v", e.Name, i, len(b), ch.ChunkType, zeros)
			}
			if zeros {
				holes++
			} else if i > 0 && cs[i-1].ChunkType != "zeros" {
				t.Errorf("%s: chunks %d and %d meet without a run of zeros", e.Name, i-1, i)
			}
		}
	}
	if holes < 5 || multi < 5 {
		t.Errorf("%d holes cut, %d files of several chunks in the rolling layer: the tree does not test the cuts", holes, multi)
	}
	if err := pullAll(t, files, lb); err != nil {
		t.Fatalf("pull: %v", err)
	}
}

// zstdDecode decompresses b whole (skippable frames are skipped).
func zstdDecode(t *testing.T, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chunkedMetaOf reads a zstd:chunked layer's TOC and its tar-split's JSON.
func chunkedMetaOf(t *testing.T, blob []byte, lb *LayerBlob) (*chunked.TOC, []byte) {
	t.Helper()
	l, err := chunked.LayoutOf(lb.Annotations, lb.Size)
	if err != nil {
		t.Fatal(err)
	}
	piece := func(p chunked.Position) []byte {
		b := zstdDecode(t, blob[p.Offset:p.Offset+p.Length])
		if int64(len(b)) != p.Uncompressed {
			t.Fatalf("%d bytes, the annotation says %d", len(b), p.Uncompressed)
		}
		return b
	}
	toc, err := chunked.ParseTOC(piece(l.TOC), chunked.Limits{ContentEnd: l.TOC.Offset})
	if err != nil {
		t.Fatal(err)
	}
	return toc, piece(l.TarSplit)
}

// failAfter accepts n bytes, then fails every write with err.
type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// TestZstdChunkedWriteError: when the blob's writer (its own goroutine in
// zstd:chunked) fails, the layer's error is that writer's, not a note that
// something failed, wherever in the layer the failure comes.
func TestZstdChunkedWriteError(t *testing.T) {
	dir := t.TempDir()
	root := chunkedTree(t, dir)
	open := testObjects(t, filepath.Join(dir, "objects"))
	full, _ := writeLayerBytes(t, root, CompressionZstdChunked, open, layerHooks{})
	errDisk := errors.New("no space left on the test's device")
	for _, n := range []int{0, 4096, len(full) / 2, len(full) - 100} {
		_, err := writeLayer(&failAfter{n: n, err: errDisk}, root, CompressionZstdChunked, open, layerHooks{})
		if !errors.Is(err, errDisk) {
			t.Errorf("failing after %d of %d bytes: error %v, want the writer's", n, len(full), err)
		}
	}
}
