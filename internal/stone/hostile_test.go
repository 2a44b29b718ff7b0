package stone

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// testPayload is one payload of a synthetic stone.
type testPayload struct {
	kind        PayloadKind
	compression Compression
	records     uint32
	plain       []byte
	stored      []byte // if set, the stored body as is (plain is then only its size)
}

// buildStone writes a stone with correct checksums and sizes.
func buildStone(t testing.TB, ft FileType, payloads ...testPayload) []byte {
	t.Helper()
	var out bytes.Buffer
	out.Write(Magic[:])
	binary.Write(&out, binary.BigEndian, uint16(len(payloads)))
	out.Write(integrity[:])
	out.WriteByte(byte(ft))
	binary.Write(&out, binary.BigEndian, uint32(1))
	for _, p := range payloads {
		stored := p.plain
		if p.stored != nil {
			stored = p.stored
		} else if p.compression == CompressionZstd {
			enc, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			stored = enc.EncodeAll(p.plain, nil)
		}
		var h [32]byte
		binary.BigEndian.PutUint64(h[0:], uint64(len(stored)))
		binary.BigEndian.PutUint64(h[8:], uint64(len(p.plain)))
		binary.BigEndian.PutUint64(h[16:], xxh3.Hash(stored))
		binary.BigEndian.PutUint32(h[24:], p.records)
		binary.BigEndian.PutUint16(h[28:], 1)
		h[30], h[31] = byte(p.kind), byte(p.compression)
		out.Write(h[:])
		out.Write(stored)
	}
	return out.Bytes()
}

type metaRec struct {
	tag  MetaTag
	kind MetaKind
	val  []byte
}

func str(tag MetaTag, s string) metaRec { return metaRec{tag, MetaString, append([]byte(s), 0)} }

func u64(tag MetaTag, v uint64) metaRec {
	return metaRec{tag, MetaUint64, binary.BigEndian.AppendUint64(nil, v)}
}

func metaPayload(recs ...metaRec) testPayload {
	var b []byte
	for _, r := range recs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.val)))
		b = binary.BigEndian.AppendUint16(b, uint16(r.tag))
		b = append(b, byte(r.kind), 0)
		b = append(b, r.val...)
	}
	return testPayload{kind: KindMeta, compression: CompressionZstd, records: uint32(len(recs)), plain: b}
}

func basicMeta() testPayload {
	return metaPayload(str(TagName, "t"), str(TagVersion, "1"), u64(TagRelease, 1), u64(TagBuildRelease, 1), str(TagArchitecture, "x86_64"))
}

func layoutPayload(entries ...LayoutEntry) testPayload {
	var b []byte
	for _, e := range entries {
		var src []byte
		switch e.Type {
		case LayoutRegular:
			src = e.Digest[:]
			if e.Source != "" { // a malformed digest, for hostile tests
				src = []byte(e.Source)
			}
		case LayoutSymlink:
			src = []byte(e.Source)
		}
		b = binary.BigEndian.AppendUint32(b, e.UID)
		b = binary.BigEndian.AppendUint32(b, e.GID)
		b = binary.BigEndian.AppendUint32(b, e.Mode)
		b = binary.BigEndian.AppendUint32(b, e.Tag)
		b = binary.BigEndian.AppendUint16(b, uint16(len(src)))
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.Target)))
		b = append(b, byte(e.Type))
		b = append(b, make([]byte, 11)...)
		b = append(b, src...)
		b = append(b, e.Target...)
	}
	return testPayload{kind: KindLayout, compression: CompressionZstd, records: uint32(len(entries)), plain: b}
}

func indexPayload(entries ...IndexEntry) testPayload {
	var b []byte
	for _, e := range entries {
		b = binary.BigEndian.AppendUint64(b, e.Start)
		b = binary.BigEndian.AppendUint64(b, e.End)
		b = append(b, e.Digest[:]...)
	}
	return testPayload{kind: KindIndex, compression: CompressionZstd, records: uint32(len(entries)), plain: b}
}

func digestOf(s string) XXH128 { return XXH128(xxh3.HashString128(s).Bytes()) }

func reg(target, content string) LayoutEntry {
	return LayoutEntry{Mode: 0o100644, Type: LayoutRegular, Digest: digestOf(content), Target: target}
}

// synthetic is a small valid package: two files and a symlink.
func synthetic() (meta, layout, index, content testPayload) {
	a, b := "alpha content\n", "bravo, a little longer\n"
	return basicMeta(),
		layoutPayload(reg("bin/a", a), reg("share/b", b),
			LayoutEntry{Mode: 0o120777, Type: LayoutSymlink, Source: "../bin/a", Target: "lib/a"}),
		indexPayload(IndexEntry{0, uint64(len(a)), digestOf(a)}, IndexEntry{uint64(len(a)), uint64(len(a) + len(b)), digestOf(b)}),
		testPayload{kind: KindContent, compression: CompressionZstd, plain: []byte(a + b)}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.stone")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// importErr imports data into a fresh store and returns the error; the
// store must hold only sound objects whatever happened.
func importErr(t *testing.T, data []byte) error {
	t.Helper()
	sink := newSink(t)
	_, _, err := Import(context.Background(), writeTemp(t, data), sink, nil)
	assertStoreSound(t, sink.Store)
	if err != nil && !strings.Contains(err.Error(), "x.stone") {
		t.Errorf("error does not name the file: %v", err)
	}
	return err
}

func TestSyntheticImports(t *testing.T) {
	m, l, i, c := synthetic()
	sink := newSink(t)
	p, root, err := Import(context.Background(), writeTemp(t, buildStone(t, FileBinary, m, l, i, c)), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, p, root, sink.Store)
	if root.Lookup("lib/a").Target != "../bin/a" || root.Lookup("share/b").Size != 23 {
		t.Error("synthetic tree wrong")
	}
	// Uncompressed payloads are accepted too.
	for _, pl := range []*testPayload{&m, &l, &i, &c} {
		pl.compression = CompressionNone
	}
	if err := importErr(t, buildStone(t, FileBinary, m, l, i, c)); err != nil {
		t.Fatal(err)
	}
}

func TestHostile(t *testing.T) {
	m, l, i, c := synthetic()
	a, b := "alpha content\n", "bravo, a little longer\n"
	ab := uint64(len(a) + len(b))
	cases := []struct {
		name     string
		payloads []testPayload
		want     string
	}{
		{"dotdot target", []testPayload{m, layoutPayload(reg("../x", a)), i, c}, `target "../x": ".." path component`},
		{"dotdot inside", []testPayload{m, layoutPayload(reg("share/../../x", a)), i, c}, `".." path component`},
		{"absolute target", []testPayload{m, layoutPayload(reg("/etc/passwd", a)), i, c}, "absolute path"},
		{"empty component", []testPayload{m, layoutPayload(reg("a//b", a)), i, c}, "empty path component"},
		{"dot component", []testPayload{m, layoutPayload(reg("a/./b", a)), i, c}, `"." path component`},
		{"empty target", []testPayload{m, layoutPayload(reg("\x00", a)), i, c}, "empty path"},
		{"embedded NUL", []testPayload{m, layoutPayload(reg("a\x00b", a)), i, c}, "embedded NUL"},
		{"long component", []testPayload{m, layoutPayload(reg(strings.Repeat("n", 256), a)), i, c}, "component of 256 bytes"},
		{"child of a file", []testPayload{m, layoutPayload(reg("f", a), reg("f/g", b)), i, c}, "not a directory"},
		{"content not in index", []testPayload{m, layoutPayload(reg("f", "other")), i, c}, "not in the index"},
		{"range beyond content", []testPayload{m, l, indexPayload(IndexEntry{0, ab + 1, digestOf(a)}), c}, "beyond the"},
		{"start after end", []testPayload{m, l, indexPayload(IndexEntry{5, 4, digestOf(a)}), c}, "after end"},
		{"overlapping ranges", []testPayload{m, l, indexPayload(IndexEntry{0, 14, digestOf(a)}, IndexEntry{10, ab, digestOf(b)}), c}, "overlaps"},
		{"swapped digests", []testPayload{m, l, indexPayload(IndexEntry{0, 14, digestOf(b)}, IndexEntry{14, ab, digestOf(a)}), c}, "digest mismatch"},
		{"same digest two sizes", []testPayload{m, l, indexPayload(IndexEntry{0, 14, digestOf(a)}, IndexEntry{0, 15, digestOf(a)}), c}, "another range with that digest"},
		{"empty range, wrong digest", []testPayload{m, l, indexPayload(IndexEntry{3, 3, digestOf(a)}), c}, "empty range"},
		{"regular source not 16 bytes", []testPayload{m, layoutPayload(LayoutEntry{Mode: 0o100644, Type: LayoutRegular, Source: "0123456789abcde", Target: "f"}), i, c}, "source of 15 bytes"},
		{"empty symlink", []testPayload{m, layoutPayload(LayoutEntry{Mode: 0o120777, Type: LayoutSymlink, Source: "\x00", Target: "f"}), i, c}, "bad symlink target"},
		{"unknown layout type", []testPayload{m, layoutPayload(LayoutEntry{Type: 9, Target: "f"}), i, c}, "unknown file type 9"},
		{"two layouts", []testPayload{m, l, l, i, c}, "a second Layout payload"},
		{"two indexes", []testPayload{m, l, i, i, c}, "a second Index payload"},
		{"two contents", []testPayload{m, l, i, c, c}, "a second Content payload"},
		{"no meta", []testPayload{l, i, c}, "no Meta payload"},
		{"missing name", []testPayload{metaPayload(str(TagVersion, "1"), str(TagArchitecture, "x")), l, i, c}, "missing Name"},
		{"slash in name", []testPayload{metaPayload(str(TagName, "a/b"), str(TagVersion, "1"), str(TagArchitecture, "x")), l, i, c}, "path separator"},
		{"name not a string", []testPayload{metaPayload(u64(TagName, 3)), l, i, c}, "Uint64 value where a String"},
		{"release not a number", []testPayload{metaPayload(str(TagRelease, "3")), l, i, c}, "String value where an integer"},
		{"negative release", []testPayload{metaPayload(metaRec{TagRelease, MetaInt8, []byte{0xff}}), l, i, c}, "negative value -1"},
		{"numeric length", []testPayload{metaPayload(metaRec{TagRelease, MetaUint64, []byte{1, 2}}), l, i, c}, "Uint64 value of 2 bytes"},
		{"bad utf-8", []testPayload{metaPayload(str(TagName, "\xff\xfe")), l, i, c}, "not UTF-8"},
		{"dependency without kind", []testPayload{metaPayload(metaRec{TagDepends, MetaDependency, nil}), l, i, c}, "empty Dependency"},
		{"content shorter than header", []testPayload{m, l, i, testPayload{kind: KindContent, compression: CompressionZstd, plain: []byte(a)}}, "beyond the"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := importErr(t, buildStone(t, FileBinary, tc.payloads...))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
			t.Log(err)
		})
	}
	// The swapped-digests stone: the reader's error wraps ErrDigestMismatch.
	err := importErr(t, buildStone(t, FileBinary, m, l, indexPayload(IndexEntry{0, 14, digestOf(b)}, IndexEntry{14, ab, digestOf(a)}), c))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("swapped digests: %v does not wrap ErrDigestMismatch", err)
	}
}

// TestCorruptedStones flips, truncates and inflates the shipped stones.
// bigWindowFrame is a zstd frame holding data in one raw block whose header
// claims a 2 GiB window.
func bigWindowFrame(data []byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3} // no FCS; window 2^(10+21)
	bh := 1 | len(data)<<3                             // last block, raw
	f = append(f, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(f, data...)
}

// TestHugeWindow: a tiny frame claiming a 2 GiB window is refused (the
// decoder would allocate the window up front), in records and in content.
func TestHugeWindow(t *testing.T) {
	m, l, i, c := synthetic()
	// A sane window (the same frame claiming 1 KiB) decodes.
	small := append([]byte(nil), bigWindowFrame(c.plain)...)
	small[5] = 0
	ok := testPayload{KindContent, CompressionZstd, 0, c.plain, small}
	if err := importErr(t, buildStone(t, FileBinary, m, l, i, ok)); err != nil {
		t.Fatalf("hand-made frame with a small window: %v", err)
	}
	big := testPayload{KindContent, CompressionZstd, 0, c.plain, bigWindowFrame(c.plain)}
	if err := importErr(t, buildStone(t, FileBinary, m, l, i, big)); err == nil || !strings.Contains(err.Error(), "Content payload: zstd") {
		t.Errorf("content with a 2 GiB window: %v", err)
	}
	bigLayout := l
	bigLayout.stored = bigWindowFrame(l.plain)
	if err := importErr(t, buildStone(t, FileBinary, m, bigLayout, i, c)); err == nil || !strings.Contains(err.Error(), "Layout payload: zstd") {
		t.Errorf("layout with a 2 GiB window: %v", err)
	}
}

func TestCorruptedStones(t *testing.T) {
	orig := readStone(t, "bash-completion-2.11-1-1-x86_64.stone")
	mutate := func(f func(d []byte) []byte) []byte { return f(bytes.Clone(orig)) }
	setU64 := func(payload, field int, v uint64) []byte {
		return mutate(func(d []byte) []byte {
			hdr, _ := payloadSpan(d, payload)
			binary.BigEndian.PutUint64(d[hdr+field:], v)
			return d
		})
	}
	setU32 := func(payload, field int, v uint32) []byte {
		return mutate(func(d []byte) []byte {
			hdr, _ := payloadSpan(d, payload)
			binary.BigEndian.PutUint32(d[hdr+field:], v)
			return d
		})
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"magic", mutate(func(d []byte) []byte { d[1] = 'x'; return d }), "not a stone"},
		{"integrity pattern", mutate(func(d []byte) []byte { d[10] ^= 1; return d }), "corrupt prelude"},
		{"version", mutate(func(d []byte) []byte { d[31] = 2; return d }), "unsupported format version 2"},
		{"payload count up", mutate(func(d []byte) []byte { d[5]++; return d }), "truncated: payload 5 of 5"},
		{"payload count down", mutate(func(d []byte) []byte { d[5]--; return d }), "trailing data"},
		{"trailing byte", append(bytes.Clone(orig), 0), "1 bytes of trailing data"},
		{"absurd stored size", setU64(0, 0, 1<<62), "truncated: Meta payload claims"},
		{"absurd plain size (meta)", setU64(0, 8, 1<<40), "exceeds the"},
		{"plain size off by one", setU64(1, 8, 64732), "Layout payload decompresses to 64731 bytes, header says 64732"},
		{"plain size short", setU64(1, 8, 64730), "decompresses to more than 64730"},
		{"absurd record count (layout)", setU32(1, 24, 1<<31), "over the limit"},
		{"record count (layout)", setU32(1, 24, 1<<20), "cannot fit"},
		{"record count off by one (layout)", setU32(1, 24, 744), "bytes after 744 records"},
		{"record count (index)", setU32(2, 24, 475), "for 475 records"},
		{"absurd content plain size", setU64(3, 8, 1<<50), "decompresses to 872279 bytes, header says"},
		{"content plain size short", setU64(3, 8, 1000), "beyond the 1000 bytes"},
		{"checksum", setU64(2, 16, 12345), "Index payload checksum mismatch"},
		{"unknown compression", mutate(func(d []byte) []byte { hdr, _ := payloadSpan(d, 1); d[hdr+31] = 7; return d }), "Layout payload with unknown compression 7 was skipped"},
		{"unknown payload kind (skipped)", mutate(func(d []byte) []byte { hdr, _ := payloadSpan(d, 1); d[hdr+30] = 9; return d }), "an Index payload but no Layout"},
	}
	for p := range 4 {
		data := mutate(func(d []byte) []byte { _, body := payloadSpan(d, p); body[len(body)/3] ^= 0x10; return d })
		kind := PayloadKind(data[func() int { h, _ := payloadSpan(data, p); return h }()+30])
		cases = append(cases, struct {
			name string
			data []byte
			want string
		}{"flip in " + kind.String(), data, kind.String() + " payload checksum mismatch"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := importErr(t, tc.data)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestTruncated: every prefix of a small stone, and many of a large one,
// is an error from Open or from the content walk, never a panic.
func TestTruncated(t *testing.T) {
	for _, name := range []string{"italian-pizza-1-1-1-x86_64.stone", "bash-completion-2.11-1-1-x86_64.stone"} {
		data := readStone(t, name)
		step := 1
		if len(data) > 4096 {
			step = 997
		}
		for n := 0; n < len(data); n += step {
			p, err := Open(bytes.NewReader(data[:n]), int64(n), name)
			if err == nil {
				err = p.WalkContent(context.Background(), func(_ IndexEntry, r io.Reader) error {
					_, err := io.Copy(io.Discard, r)
					return err
				})
			}
			if err == nil {
				t.Fatalf("%s truncated to %d bytes: accepted", name, n)
			}
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("%s truncated to %d bytes: error does not name the file: %v", name, n, err)
			}
		}
	}
}

func FuzzRead(f *testing.F) {
	dir := stonesDir(f)
	for _, name := range []string{"bash-completion-2.11-1-1-x86_64.stone", "italian-pizza-1-1-1-x86_64.stone",
		"pineapple-1-1-1-x86_64.stone", "manifests/nano.manifest.x86_64.bin", "manifests/bash.manifest.x86_64.bin",
		"manifests/glibc.manifest.x86_64.bin", "manifests/systemd.manifest.x86_64.bin"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	m, l, i, c := synthetic()
	f.Add(buildStone(f, FileBinary, m, l, i, c))
	// Later-format stones: a payload of an unknown kind, one in an unknown
	// compression, a Meta record of an unknown kind.
	unknown := testPayload{kind: 42, compression: 9, records: 1, plain: []byte("later")}
	lz := l
	lz.compression = 9
	f.Add(buildStone(f, FileBinary, m, unknown, l, i, c))
	f.Add(buildStone(f, FileBinary, m, lz, i, c))
	f.Add(buildStone(f, FileBinary, metaPayload(str(TagName, "t"), metaRec{TagSummary, 200, []byte{1, 2}}), l, i, c))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Open(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			return
		}
		digests := map[XXH128][32]byte{}
		err = p.WalkContent(context.Background(), func(e IndexEntry, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			digests[e.Digest] = [32]byte{1}
			return err
		})
		if err != nil {
			return
		}
		for _, e := range p.Index {
			digests[e.Digest] = [32]byte{1}
		}
		if root, err := p.Tree(digests); err == nil && !root.IsDir() {
			t.Fatal("tree root is not a directory")
		}
		for _, meta := range p.Metas {
			_ = meta.ID()
			_ = meta.Validate()
		}
	})
}

// TestLaterFormat: payloads of a kind or compression this reader does not
// know are skipped by their stored size, and Meta records of unknown kinds
// are kept raw, as moss does (stone-format.md, sections 2 and 3): a later
// format adding them must not break today's readers.
func TestLaterFormat(t *testing.T) {
	m, l, i, c := synthetic()
	want := func(t *testing.T, data []byte) *Package {
		t.Helper()
		sink := newSink(t)
		p, root, err := Import(context.Background(), writeTemp(t, data), sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, p, root, sink.Store)
		if root.Lookup("lib/a").Target != "../bin/a" || root.Lookup("share/b").Size != 23 || root.Lookup("bin/a").Size != 14 {
			t.Error("tree differs from the synthetic package's")
		}
		return p
	}
	skipped := func(t *testing.T, p *Package, n int) {
		t.Helper()
		got := 0
		for _, h := range p.Payloads {
			if h.Skipped() {
				got++
			}
		}
		if got != n {
			t.Errorf("%d payloads skipped, want %d", got, n)
		}
	}
	t.Run("unknown payload kind", func(t *testing.T) {
		// One compressed, one stored whose plain size disagrees (never
		// looked at), one empty, one last after Content.
		garbage := []byte("a payload of a kind from a later format \x00\xff")
		k1 := testPayload{kind: 42, compression: CompressionZstd, records: 7, plain: garbage}
		k2 := testPayload{kind: 200, compression: CompressionNone, records: 1, plain: []byte("xy"), stored: garbage}
		k3 := testPayload{kind: 6, compression: CompressionNone}
		k4 := testPayload{kind: 255, compression: 77, records: 3, plain: garbage}
		p := want(t, buildStone(t, FileBinary, m, k1, l, k2, i, k3, c, k4))
		skipped(t, p, 4)
		if len(p.Payloads) != 8 {
			t.Errorf("%d payloads, want 8", len(p.Payloads))
		}
	})
	t.Run("unknown compression", func(t *testing.T) {
		// A second Meta and an Attributes payload in a compression from a
		// later format: skipped, and the package imports.
		m2 := metaPayload(str(TagName, "other"))
		m2.compression = 9
		a := testPayload{kind: KindAttributes, compression: 200, records: 1, plain: []byte("not even records")}
		p := want(t, buildStone(t, FileBinary, m, l, m2, a, i, c))
		skipped(t, p, 2)
		if len(p.Metas) != 1 || p.Meta.Name != "t" {
			t.Errorf("metas %+v: the skipped Meta was read", p.Metas)
		}
	})
	t.Run("files in an unknown compression", func(t *testing.T) {
		// The package's Meta is still readable, but its files are not: an
		// import would be an empty tree, so it is refused by name.
		for _, which := range []string{"Layout", "Index", "Content"} {
			ml, mi, mc := l, i, c
			switch which {
			case "Layout":
				ml.compression = 9
			case "Index":
				mi.compression = 9
			case "Content":
				mc.compression = 9
			}
			data := buildStone(t, FileBinary, m, ml, mi, mc)
			p, err := Open(bytes.NewReader(data), int64(len(data)), "x.stone")
			if err != nil {
				t.Fatalf("%s: Open: %v", which, err)
			}
			if p.Meta == nil || p.Meta.Name != "t" {
				t.Errorf("%s: meta not read", which)
			}
			err = importErr(t, data)
			if err == nil || !strings.Contains(err.Error(), which+" payload with unknown compression 9 was skipped") {
				t.Errorf("%s: import error %v", which, err)
			}
		}
	})
	t.Run("unknown meta kind", func(t *testing.T) {
		raw := []byte{1, 2, 3, 4, 5}
		mk := metaPayload(str(TagName, "t"), str(TagVersion, "1"), u64(TagRelease, 1), u64(TagBuildRelease, 1), str(TagArchitecture, "x86_64"),
			metaRec{TagSummary, 200, raw}, metaRec{99, 12, raw}, metaRec{TagDepends, 0, nil}, str(TagHomepage, "h"))
		p := want(t, buildStone(t, FileBinary, mk, l, i, c))
		if p.Meta.Summary != "" || len(p.Meta.Depends) != 0 || p.Meta.Homepage != "h" {
			t.Errorf("meta %+v", p.Meta)
		}
		if len(p.Meta.Records) != 9 {
			t.Fatalf("%d records, want 9", len(p.Meta.Records))
		}
		r := p.Meta.Records[5]
		if r.Tag != TagSummary || r.Kind != 200 || !bytes.Equal(r.Raw, raw) || !bytes.Equal(r.Value().([]byte), raw) {
			t.Errorf("unknown-kind record %+v", r)
		}
		if p.Meta.Records[6].Tag.String() != "Unknown(99)" || p.Meta.Records[6].Kind.String() != "Unknown(12)" {
			t.Errorf("record 6 %+v", p.Meta.Records[6])
		}
		// A required field in an unknown kind is missing, not mistyped.
		mn := metaPayload(metaRec{TagName, 200, []byte("t")}, str(TagVersion, "1"), str(TagArchitecture, "x"))
		if err := importErr(t, buildStone(t, FileBinary, mn, l, i, c)); err == nil || !strings.Contains(err.Error(), "missing Name") {
			t.Errorf("name of an unknown kind: %v", err)
		}
	})
}
