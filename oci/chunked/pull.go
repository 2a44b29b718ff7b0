package chunked

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
)

// ContentSource is the store a partial pull looks file contents up in, by
// the plain sha256 of their bytes.
type ContentSource interface {
	HasSHA256(d [32]byte) bool
	// OpenSHA256 opens the content; an error wrapping fs.ErrNotExist when absent.
	OpenSHA256(d [32]byte) (io.ReadCloser, error)
}

// Descriptor is what the manifest and config say of a layer.
type Descriptor struct {
	Digest      string // the blob's digest (for the registry request and messages)
	Size        int64  // the blob's size
	Annotations map[string]string
	// DiffID is the config's diff_id of the layer, the sha256 of its tar
	// stream; empty when the caller checks the stream itself.
	DiffID string
}

// Options tune Prepare.
type Options struct {
	// TempDir holds the fetched files until the layer is applied (Close
	// removes them). Put it on the store's filesystem.
	TempDir string
	// MaxRanges per request at first (0: DefaultMaxRanges).
	MaxRanges int
	// MaxEntries per TOC (0: DefaultMaxEntries).
	MaxEntries int
	// AllowUnverified pulls layers without a tar-split (eStargz, the old
	// zstd:chunked variant) partially: their tar stream is synthesized from
	// the TOC, so its diff_id cannot be checked. Off: such layers fail with
	// ErrFallback and are downloaded whole.
	AllowUnverified bool
	// Progress, if set, is called with the bytes of each piece read from
	// the source.
	Progress func(n int64)
}

// ErrFallback wraps every reason to download a layer whole instead: no TOC
// the manifest vouches for, no tar-split (without AllowUnverified), ranges
// refused. Any other error means the layer is refused.
var ErrFallback = errors.New("partial pull not possible")

// Stats says what a partial pull of one layer fetched and what it saved.
type Stats struct {
	Format        Format
	Files         int   // distinct regular-file contents in the layer
	Present       int   // of those, already in the store
	Fetched       int   // of those, fetched
	PresentBytes  int64 // compressed bytes not fetched because the store had them
	FetchedBytes  int64 // compressed bytes requested for file contents (gaps of merged ranges included)
	MetadataBytes int64 // footer, TOC and tar-split bytes requested
	Requests      int   // HTTP range requests
}

// Layer is a layer whose missing contents have been fetched and checked.
type Layer struct {
	desc     Descriptor
	stats    Stats
	toc      *TOC
	tarSplit []byte          // uncompressed JSON lines, nil when unverified
	segments []storage.Entry // tarSplit parsed (by order), replayed by Tar
	files    []*Entry        // regular files with content, in tar order
	store    ContentSource
	staged   map[[32]byte]string
	dir      string
}

// Stats reports what Prepare fetched.
func (l *Layer) Stats() Stats { return l.stats }

// Verified says whether Tar's stream is checked against the diff_id.
func (l *Layer) Verified() bool { return l.tarSplit != nil }

// Close removes the fetched files that were staged.
func (l *Layer) Close() error {
	if l.dir == "" {
		return nil
	}
	err := os.RemoveAll(l.dir)
	l.dir = ""
	return err
}

// Prepare reads the layer's TOC (and tar-split) with range requests, checks
// them against the manifest's digest and against each other, and fetches the
// regular files the store lacks, each checked against its sha256. Errors
// wrapping ErrFallback mean: download this layer whole.
func Prepare(ctx context.Context, rr RangeReader, desc Descriptor, store ContentSource, opts Options) (*Layer, error) {
	lay, err := LayoutOf(desc.Annotations, desc.Size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	if lay.Format == NotSeekable {
		return nil, fmt.Errorf("layer %s has no table of contents: %w", desc.Digest, ErrFallback)
	}
	if (lay.Format == Estargz || lay.Format == ZstdChunkedOld) && !opts.AllowUnverified {
		return nil, fmt.Errorf("layer %s is %s: without a tar-split its diff_id cannot be checked from a partial pull: %w", desc.Digest, lay.Format, ErrFallback)
	}
	if opts.Progress != nil {
		rr = progressReader{rr, opts.Progress}
	}
	l := &Layer{desc: desc, store: store, staged: map[[32]byte]string{}}
	l.stats.Format = lay.Format
	if err := l.readMetadata(ctx, rr, lay, opts); err != nil {
		return nil, err
	}
	if l.tarSplit == nil && !opts.AllowUnverified {
		return nil, fmt.Errorf("layer %s has no tar-split: its diff_id cannot be checked from a partial pull: %w", desc.Digest, ErrFallback)
	}
	if err := l.order(); err != nil {
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	if err := l.fetchMissing(ctx, rr, lay.Format, opts); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// readRanges reads a few small ranges whole, for metadata.
func (l *Layer) readRanges(ctx context.Context, rr RangeReader, want ...Range) ([][]byte, error) {
	out := make([][]byte, len(want))
	idx := map[Range]int{}
	for i, w := range want {
		idx[w] = i
	}
	requested, n, err := readMerged(ctx, rr, want, DefaultMaxRanges, func(r Range, rd io.Reader) error {
		b, err := io.ReadAll(rd)
		out[idx[r]] = b
		return err
	})
	l.stats.MetadataBytes += requested
	l.stats.Requests += n
	if errors.Is(err, ErrRangesRefused) {
		return nil, fmt.Errorf("layer %s: %w: %w", l.desc.Digest, err, ErrFallback)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: reading its table of contents: %w", l.desc.Digest, err)
	}
	return out, nil
}

func (l *Layer) readMetadata(ctx context.Context, rr RangeReader, lay Layout, opts Options) error {
	d := l.desc.Digest
	if lay.Format == Estargz {
		b, err := l.readRanges(ctx, rr, Range{l.desc.Size - estargzFooterSize, estargzFooterSize})
		if err != nil {
			return err
		}
		off, err := ParseEstargzFooter(b[0], l.desc.Size)
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		if n := l.desc.Size - estargzFooterSize - off; n > MaxMetadataSize {
			return fmt.Errorf("layer %s: eStargz TOC member of %d bytes exceeds the %d-byte cap", d, n, MaxMetadataSize)
		}
		b, err = l.readRanges(ctx, rr, Range{off, l.desc.Size - estargzFooterSize - off})
		if err != nil {
			return err
		}
		js, err := ExtractEstargzTOC(b[0])
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		if sha256.Sum256(js) != lay.TOCDigest {
			return fmt.Errorf("layer %s: its table of contents does not match the digest in the manifest", d)
		}
		l.toc, err = ParseTOC(js, Limits{ContentEnd: off, MaxEntries: opts.MaxEntries, Estargz: true})
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		return nil
	}
	if lay.Format == ZstdChunked && lay.TarSplit == (Position{}) {
		// Older writers put the tar-split position only in the footer.
		b, err := l.readRanges(ctx, rr, Range{l.desc.Size - FooterSize, FooterSize})
		if err != nil {
			return err
		}
		f, err := ParseFooter(b[0], l.desc.Size)
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		if f.TOC != lay.TOC {
			return fmt.Errorf("layer %s: its footer places the table of contents at %+v, its annotations at %+v", d, f.TOC, lay.TOC)
		}
		lay.TarSplit = f.TarSplit
	}
	want := []Range{{lay.TOC.Offset, lay.TOC.Length}}
	if lay.TarSplit != (Position{}) {
		want = append(want, Range{lay.TarSplit.Offset, lay.TarSplit.Length})
		if lay.TarSplit.Offset < lay.TOC.Offset+lay.TOC.Length && lay.TOC.Offset < lay.TarSplit.Offset+lay.TarSplit.Length {
			return fmt.Errorf("layer %s: table of contents and tar-split overlap", d)
		}
		if want[1].Off < want[0].Off {
			want[0], want[1] = want[1], want[0]
		}
	}
	bs, err := l.readRanges(ctx, rr, want...)
	if err != nil {
		return err
	}
	tocZ := bs[0]
	if want[0].Off != lay.TOC.Offset {
		tocZ = bs[1]
	}
	if sha256.Sum256(tocZ) != lay.TOCDigest {
		return fmt.Errorf("layer %s: its table of contents does not match the digest in the manifest", d)
	}
	js, err := unzstdExact(tocZ, lay.TOC.Uncompressed)
	if err != nil {
		return fmt.Errorf("layer %s: table of contents: %w", d, err)
	}
	contentEnd := lay.TOC.Offset - skippableHeader
	if lay.TarSplit != (Position{}) {
		contentEnd = min(contentEnd, lay.TarSplit.Offset-skippableHeader)
	}
	l.toc, err = ParseTOC(js, Limits{ContentEnd: contentEnd, MaxEntries: opts.MaxEntries})
	if errors.Is(err, ErrTOCVersion) {
		return fmt.Errorf("layer %s: %w: %w", d, err, ErrFallback)
	}
	if err != nil {
		return fmt.Errorf("layer %s: %w", d, err)
	}
	if lay.TarSplit == (Position{}) {
		if l.toc.TarSplitDigest != "" {
			return fmt.Errorf("layer %s: its table of contents names a tar-split the layer does not locate", d)
		}
		return nil
	}
	tsZ := bs[1]
	if want[0].Off != lay.TOC.Offset {
		tsZ = bs[0]
	}
	if l.toc.TarSplitDigest == "" {
		return fmt.Errorf("layer %s: it has a tar-split but its table of contents has no digest for it", d)
	}
	if want, _ := ParseDigest(l.toc.TarSplitDigest); sha256.Sum256(tsZ) != want {
		return fmt.Errorf("layer %s: its tar-split does not match the digest in its table of contents", d)
	}
	if l.tarSplit, err = unzstdExact(tsZ, lay.TarSplit.Uncompressed); err != nil {
		return fmt.Errorf("layer %s: tar-split: %w", d, err)
	}
	return nil
}

// unzstdExact decompresses b, which must expand to exactly n bytes.
func unzstdExact(b []byte, n int64) ([]byte, error) {
	// The output is capped by n below; the window may be larger than n.
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(max(n+1, 64<<20))))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	out, err := io.ReadAll(io.LimitReader(dec, n+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("expands to %d bytes, %d declared", len(out), n)
	}
	return out, nil
}

// order lists the regular files with content in tar order and, with a
// tar-split, checks that it names the same files with the same sizes as
// the TOC, so that a disagreement is refused before anything is fetched.
func (l *Layer) order() error {
	for i := range l.toc.Entries {
		if e := &l.toc.Entries[i]; e.Type == TypeReg && e.Size > 0 {
			l.files = append(l.files, e)
		}
	}
	if l.tarSplit == nil {
		return nil
	}
	queue := map[string][]*Entry{}
	for _, e := range l.files {
		queue[e.Clean] = append(queue[e.Clean], e)
	}
	ordered := make([]*Entry, 0, len(l.files))
	up := storage.NewJSONUnpacker(bytes.NewReader(l.tarSplit))
	for {
		te, err := up.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("tar-split: %w", err)
		}
		l.segments = append(l.segments, *te)
		if te.Type != storage.FileType || te.Size == 0 {
			continue
		}
		name, err := CleanName(te.GetName())
		if err != nil {
			return fmt.Errorf("tar-split: %w", err)
		}
		q := queue[name]
		if len(q) == 0 {
			return fmt.Errorf("tar-split names file %q with %d bytes, which the table of contents lacks", te.GetName(), te.Size)
		}
		if q[0].Size != te.Size {
			return fmt.Errorf("file %q has %d bytes in the tar-split, %d in the table of contents", te.GetName(), te.Size, q[0].Size)
		}
		ordered = append(ordered, q[0])
		queue[name] = q[1:]
	}
	if len(ordered) != len(l.files) {
		return fmt.Errorf("the table of contents lists %d files with content, the tar-split %d", len(l.files), len(ordered))
	}
	l.files = ordered
	return nil
}

// fetchMissing fetches each distinct content the store lacks and stages it
// under its sha256 once it has the right size and digest.
func (l *Layer) fetchMissing(ctx context.Context, rr RangeReader, f Format, opts Options) error {
	want := map[Range]*Entry{}
	var ranges []Range
	seen := map[[32]byte]bool{}
	for _, e := range l.files {
		if seen[e.sha] {
			continue
		}
		seen[e.sha] = true
		l.stats.Files++
		if l.store != nil && l.store.HasSHA256(e.sha) {
			l.stats.Present++
			l.stats.PresentBytes += e.EndOffset - e.Offset
			continue
		}
		r := Range{e.Offset, e.EndOffset - e.Offset}
		if o, dup := want[r]; dup {
			return fmt.Errorf("layer %s: files %q and %q claim the same bytes with different digests", l.desc.Digest, o.Name, e.Name)
		}
		want[r] = e
		ranges = append(ranges, r)
	}
	if len(ranges) == 0 {
		return nil
	}
	dir, err := os.MkdirTemp(opts.TempDir, "partial-")
	if err != nil {
		return fmt.Errorf("layer %s: staging: %w", l.desc.Digest, err)
	}
	l.dir = dir
	slices.SortFunc(ranges, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	for i := 1; i < len(ranges); i++ {
		if ranges[i].Off < ranges[i-1].End() {
			return fmt.Errorf("layer %s: the table of contents gives files %q and %q overlapping byte ranges", l.desc.Digest, want[ranges[i-1]].Name, want[ranges[i]].Name)
		}
	}
	var zdec *zstd.Decoder
	if f != Estargz {
		zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return err
		}
		defer zdec.Close()
	}
	buf := make([]byte, 256<<10)
	requested, n, err := readMerged(ctx, rr, ranges, opts.MaxRanges, func(r Range, rd io.Reader) error {
		e := want[r]
		if err := l.stage(e, f, zdec, rd, buf); err != nil {
			return fmt.Errorf("layer %s: file %q: %w", l.desc.Digest, e.Name, err)
		}
		l.stats.Fetched++
		return nil
	})
	l.stats.FetchedBytes += requested
	l.stats.Requests += n
	if errors.Is(err, ErrRangesRefused) {
		return fmt.Errorf("layer %s: %w: %w", l.desc.Digest, err, ErrFallback)
	}
	return err
}

// stage decompresses one file's range into the staging directory and keeps
// it only if it has exactly the size and sha256 the TOC gives.
func (l *Layer) stage(e *Entry, f Format, zdec *zstd.Decoder, rd io.Reader, buf []byte) error {
	var src io.Reader
	switch f {
	case Estargz:
		// A member may go on with tar padding and the next header; take
		// exactly the file's bytes.
		zr, err := gzip.NewReader(rd)
		if err != nil {
			return err
		}
		src = io.LimitReader(zr, e.Size)
	default:
		if err := zdec.Reset(rd); err != nil {
			return err
		}
		src = io.LimitReader(zdec, e.Size+1)
	}
	tmp, err := os.CreateTemp(l.dir, ".fetch-")
	if err != nil {
		return err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), src, buf)
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	if n != e.Size {
		return fmt.Errorf("expands to %d bytes or more, the table of contents says %d", n, e.Size)
	}
	if [32]byte(h.Sum(nil)) != e.sha {
		return fmt.Errorf("content does not match its digest %s", e.Digest)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	final := filepath.Join(l.dir, hex.EncodeToString(e.sha[:]))
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	tmp = nil
	l.staged[e.sha] = final
	return nil
}

// open returns a file's content: staged if fetched, else from the store.
func (l *Layer) open(e *Entry) (io.ReadCloser, error) {
	if p, ok := l.staged[e.sha]; ok {
		return os.Open(p)
	}
	if l.store == nil {
		return nil, fmt.Errorf("content %s of %q neither fetched nor in a store", e.Digest, e.Name)
	}
	rc, err := l.store.OpenSHA256(e.sha)
	if err != nil {
		return nil, fmt.Errorf("content %s of %q from the store: %w", e.Digest, e.Name, err)
	}
	return rc, nil
}

// exactReader fails unless its source yields exactly n bytes.
type exactReader struct {
	rc   io.ReadCloser
	n    int64
	name string
}

func (r *exactReader) Read(p []byte) (int, error) {
	if int64(len(p)) > r.n+1 {
		p = p[:r.n+1]
	}
	k, err := r.rc.Read(p)
	r.n -= int64(k)
	if r.n < 0 {
		return 0, fmt.Errorf("content of %q is longer than its size", r.name)
	}
	if err == io.EOF && r.n > 0 {
		return k, fmt.Errorf("content of %q is %d bytes short", r.name, r.n)
	}
	return k, err
}

func (r *exactReader) Close() error { return r.rc.Close() }

// fileGetter hands asm the contents in tar order.
type fileGetter struct {
	l    *Layer
	next int
}

func (g *fileGetter) Get(name string) (io.ReadCloser, error) {
	if g.next >= len(g.l.files) {
		return nil, fmt.Errorf("tar-split asks for %q after the last file", name)
	}
	e := g.l.files[g.next]
	g.next++
	if c, err := CleanName(name); err != nil || c != e.Clean {
		return nil, fmt.Errorf("tar-split asks for %q, expected %q", name, e.Name)
	}
	rc, err := g.l.open(e)
	if err != nil {
		return nil, err
	}
	return &exactReader{rc: rc, n: e.Size, name: e.Name}, nil
}

// Tar returns the layer's tar stream. With a tar-split it is the original
// stream rebuilt byte for byte, and reading it to io.EOF fails unless its
// sha256 equals the descriptor's DiffID (when given): callers must read to io.EOF (a tar
// reader stops at the end-of-archive blocks) and honour the error before
// they keep anything. Without one (AllowUnverified) it is synthesized from
// the TOC and not checked.
func (l *Layer) Tar() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		if l.tarSplit == nil {
			pw.CloseWithError(l.synthesize(pw))
			return
		}
		var want [32]byte
		check := l.desc.DiffID != ""
		if check {
			var err error
			if want, err = ParseDigest(l.desc.DiffID); err != nil {
				pw.CloseWithError(fmt.Errorf("layer %s: diff_id: %w", l.desc.Digest, err))
				return
			}
		}
		h := sha256.New()
		err := asm.WriteOutputTarStream(&fileGetter{l: l}, &sliceUnpacker{entries: l.segments}, io.MultiWriter(pw, hashWriter{h}))
		if err == nil && check && [32]byte(h.Sum(nil)) != want {
			err = fmt.Errorf("layer %s: the tar stream rebuilt from its tar-split has diff_id sha256:%x, the config says %s", l.desc.Digest, h.Sum(nil), l.desc.DiffID)
		}
		if err != nil && !errors.Is(err, io.ErrClosedPipe) {
			err = fmt.Errorf("layer %s: rebuilding the tar stream: %w", l.desc.Digest, err)
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// progressReader reports the bytes of every piece read.
type progressReader struct {
	rr RangeReader
	fn func(int64)
}

func (p progressReader) ReadRanges(ctx context.Context, rs []Range, fn func(Range, io.Reader) error) error {
	return p.rr.ReadRanges(ctx, rs, func(r Range, rd io.Reader) error {
		return fn(r, &progressPiece{rd, p.fn})
	})
}

type progressPiece struct {
	r  io.Reader
	fn func(int64)
}

func (p *progressPiece) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(int64(n))
	}
	return n, err
}

// sliceUnpacker replays tar-split entries parsed once.
type sliceUnpacker struct {
	entries []storage.Entry
	next    int
}

func (u *sliceUnpacker) Next() (*storage.Entry, error) {
	if u.next >= len(u.entries) {
		return nil, io.EOF
	}
	u.next++
	return &u.entries[u.next-1], nil
}

type hashWriter struct{ h hash.Hash }

func (w hashWriter) Write(p []byte) (int, error) { return w.h.Write(p) }

var tarTypes = map[string]byte{
	TypeReg: tar.TypeReg, TypeDir: tar.TypeDir, TypeSymlink: tar.TypeSymlink, TypeHardlink: tar.TypeLink,
	TypeChar: tar.TypeChar, TypeBlock: tar.TypeBlock, TypeFifo: tar.TypeFifo,
}

// synthesize writes a tar stream from the TOC (for layers without tar-split).
func (l *Layer) synthesize(w io.Writer) error {
	tw := tar.NewWriter(w)
	next := 0
	for i := range l.toc.Entries {
		e := &l.toc.Entries[i]
		if e.Type == TypeChunk {
			continue
		}
		if l.stats.Format == Estargz && (e.Clean == ".prefetch.landmark" || e.Clean == ".no.prefetch.landmark") {
			if e.Type == TypeReg && e.Size > 0 {
				next++
			}
			continue
		}
		hdr := &tar.Header{
			Typeflag: tarTypes[e.Type], Name: e.Name, Linkname: e.Linkname, Mode: e.Mode & 0o7777,
			Uid: int(e.UID), Gid: int(e.GID), Devmajor: e.DevMajor, Devminor: e.DevMinor, Format: tar.FormatPAX,
		}
		if e.ModTime != "" {
			if t, err := time.Parse(time.RFC3339Nano, e.ModTime); err == nil {
				hdr.ModTime = t
			}
		}
		if e.Type == TypeReg {
			hdr.Size = e.Size
		}
		for k, v := range e.Xattrs {
			b, _ := base64.StdEncoding.DecodeString(v) // checked by ParseTOC
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = string(b)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("layer %s: entry %q: %w", l.desc.Digest, e.Name, err)
		}
		if hdr.Size > 0 {
			f := l.files[next]
			next++
			rc, err := l.open(f)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, &exactReader{rc: rc, n: f.Size, name: f.Name})
			rc.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
