package oci

import (
	"archive/tar"
	"bytes"
	"hash/crc64"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/vbatts/tar-split/tar/storage"

	"github.com/mossfs/mossfs/internal/crc64iso"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/tree"
)

// tarWriterHeader is what a fresh archive/tar Writer writes for hdr.
func tarWriterHeader(hdr *tar.Header) ([]byte, error) {
	var b bytes.Buffer
	err := tar.NewWriter(&b).WriteHeader(hdr)
	return b.Bytes(), err
}

// checkHeader compares tarFormatter with archive/tar on one header: the
// same bytes, or the same refusal.
func checkHeader(t *testing.T, hdr *tar.Header) {
	t.Helper()
	want, werr := tarWriterHeader(hdr)
	var f tarFormatter
	var got bytes.Buffer
	gerr := f.header(&got, hdr)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%+v: archive/tar error %v, formatter error %v", hdr, werr, gerr)
	}
	if werr == nil && !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("%+v (fast: %v): formatter wrote\n%q\narchive/tar\n%q", hdr, f.fast(hdr), got.Bytes(), want)
	}
}

func testHeaders() []*tar.Header {
	mt := time.Unix(1700000000, 123456789).UTC()
	long := strings.Repeat("n", 99) + "/" + strings.Repeat("f", 30)
	return []*tar.Header{
		{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX},
		{Name: "usr/bin/x", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 12345, Uid: 7, Gid: 9, ModTime: time.Unix(1700000000, 0).UTC(), Format: tar.FormatPAX},
		{Name: "usr/bin/y", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, ModTime: time.Unix(1700000000, 100000000).UTC(), Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.user.b": "\x00\x01", "SCHILY.xattr.security.capability": "v", "SCHILY.xattr.user.a": strings.Repeat("x", 600)}},
		{Name: "usr/lib/l", Typeflag: tar.TypeSymlink, Linkname: "../bin/x", Mode: 0o777, ModTime: mt, Format: tar.FormatPAX},
		{Name: "usr/lib/h", Typeflag: tar.TypeLink, Linkname: "usr/bin/x", Mode: 0o644, ModTime: mt, Format: tar.FormatPAX},
		{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mt, Format: tar.FormatPAX},
		{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 1 << 20, Mode: 0o660, ModTime: mt, Format: tar.FormatPAX},
		{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600, ModTime: mt, Format: tar.FormatPAX},
		{Name: strings.Repeat("d", 100), Typeflag: tar.TypeReg, ModTime: mt, Format: tar.FormatPAX},
		{Name: strings.Repeat("d", 95) + "/abc/", Typeflag: tar.TypeDir, ModTime: mt, Format: tar.FormatPAX},
		// archive/tar's own: long or non-ASCII names, big numbers, a
		// trailing slash on a file, owner names, other records.
		{Name: long, Typeflag: tar.TypeReg, ModTime: mt, Format: tar.FormatPAX},
		{Name: "usr/ünï", Typeflag: tar.TypeReg, ModTime: mt, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeSymlink, Linkname: long, ModTime: mt, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, Uid: 3_000_000, Gid: 1 << 30, Size: 1 << 34, ModTime: mt, Format: tar.FormatPAX},
		{Name: "x/", Typeflag: tar.TypeReg, ModTime: mt, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, Uname: "root", ModTime: mt, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, ModTime: mt, Format: tar.FormatPAX, PAXRecords: map[string]string{"comment": "hi"}},
		{Name: "x", Typeflag: tar.TypeReg, ModTime: time.Unix(1<<34, 5).UTC(), Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, ModTime: time.Unix(-5, 5).UTC(), Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, ModTime: mt, AccessTime: mt, Format: tar.FormatPAX},
		{Name: "x", Typeflag: tar.TypeReg, ModTime: mt},
	}
}

// TestTarFormatter: every header, alone and in a stream with contents
// (their padding, the end of archive), comes out as archive/tar writes it.
func TestTarFormatter(t *testing.T) {
	hdrs := testHeaders()
	fast := 0
	var f tarFormatter
	for _, h := range hdrs {
		checkHeader(t, h)
		if f.fast(h) {
			fast++
		}
	}
	if fast < 10 {
		t.Fatalf("only %d headers formatted by the fast path", fast)
	}
	// A stream: random headers of the fast kind and archive/tar's, with
	// contents (zeros) of random sizes.
	r := rand.New(rand.NewSource(1))
	var want, got bytes.Buffer
	tw := tar.NewWriter(&want)
	for i := range 300 {
		h := *hdrs[r.Intn(len(hdrs))]
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(r.Intn(3000))
			if r.Intn(4) == 0 {
				h.Size = 0
			}
		}
		h.Name = strings.Replace(h.Name, "x", "x"+string(rune('a'+i%26)), 1)
		if err := tw.WriteHeader(&h); err != nil {
			continue // refused alike (TestTarFormatter above)
		}
		if err := f.header(&got, &h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			content := make([]byte, h.Size)
			tw.Write(content)
			got.Write(content)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.end(&got)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("stream of %d bytes differs from archive/tar's (%d bytes)", got.Len(), want.Len())
	}
}

func FuzzTarFormatter(f *testing.F) {
	f.Add("usr/bin/x", "", byte(tar.TypeReg), int64(0o644), int64(1), int64(2), int64(10), int64(1700000000), int64(5), "user.a", "v", int64(0), int64(0))
	f.Add("usr/", "", byte(tar.TypeDir), int64(0o755), int64(0), int64(0), int64(0), int64(1700000000), int64(0), "", "", int64(0), int64(0))
	f.Add("l", "t", byte(tar.TypeSymlink), int64(0o777), int64(1<<21), int64(2), int64(0), int64(1<<33), int64(1e9-1), "", "", int64(1<<21), int64(3))
	f.Fuzz(func(t *testing.T, name, link string, typ byte, mode, uid, gid, size, sec, nsec int64, xk, xv string, major, minor int64) {
		if size > 1<<40 || size < -1 || nsec < 0 || nsec >= 1e9 || uid != int64(int(uid)) || gid != int64(int(gid)) {
			return
		}
		h := &tar.Header{Name: name, Linkname: link, Typeflag: typ, Mode: mode, Uid: int(uid), Gid: int(gid), Size: size,
			ModTime: time.Unix(sec, nsec).UTC(), Devmajor: major, Devminor: minor, Format: tar.FormatPAX}
		if xk != "" {
			h.PAXRecords = map[string]string{"SCHILY.xattr." + xk: xv}
		}
		checkHeader(t, h)
	})
}

// TestTarSplitCRC: the crc64 tar-split records (its storage.CRCTable) is
// the ISO one that crc64iso computes.
func TestTarSplitCRC(t *testing.T) {
	data := bytes.Repeat([]byte("tar-split payload "), 1000)
	if got, want := crc64iso.Checksum(data), crc64.Checksum(data, storage.CRCTable); got != want {
		t.Fatalf("crc64iso %x, tar-split's table %x", got, want)
	}
}

// discardContent is where BenchmarkTarHeaders's archive/tar Writer writes:
// headers and padding kept, contents dropped (as the producer's sink was).
type discardContent struct {
	buf  *bytes.Buffer
	skip bool
}

func (d *discardContent) Write(p []byte) (int, error) {
	if d.skip {
		return len(p), nil
	}
	return d.buf.Write(p)
}

// BenchmarkTarHeaders formats the headers of the generated tree (65k
// entries with MOSSFS_BENCH_FULL=1) as the producer does, with archive/tar's
// Writer (contents skipped through it) and with tarFormatter; the same
// bytes.
func BenchmarkTarHeaders(b *testing.B) {
	root := gentree.Tree(gentree.FromEnv())
	var hdrs []*tar.Header
	first := map[*tree.Node]string{}
	lb := &LayerBlob{}
	var walk func(dir *tree.Node, prefix string)
	walk = func(dir *tree.Node, prefix string) {
		for _, c := range dir.Children {
			h, err := entryHeader(c, prefix+c.Name, first, lb)
			if err != nil {
				b.Fatal(err)
			}
			if h != nil {
				hdrs = append(hdrs, h)
			}
			if c.LinkTo == nil && c.IsDir() {
				walk(c, prefix+c.Name+"/")
			}
		}
	}
	walk(root, "")
	var a, f bytes.Buffer
	b.Run("archive-tar", func(b *testing.B) {
		for b.Loop() {
			a.Reset()
			sink := &discardContent{buf: &a}
			tw := tar.NewWriter(sink)
			for _, h := range hdrs {
				if err := tw.WriteHeader(h); err != nil {
					b.Fatal(err)
				}
				if h.Typeflag == tar.TypeReg && h.Size > 0 {
					sink.skip = true
					for n := h.Size; n > 0; {
						k, _ := tw.Write(zeroBlock[:min(n, int64(len(zeroBlock)))])
						n -= int64(k)
					}
					sink.skip = false
				}
			}
			tw.Close()
		}
	})
	b.Run("formatter", func(b *testing.B) {
		for b.Loop() {
			f.Reset()
			var tf tarFormatter
			for _, h := range hdrs {
				if err := tf.header(&f, h); err != nil {
					b.Fatal(err)
				}
			}
			tf.end(&f)
		}
	})
	if !bytes.Equal(a.Bytes(), f.Bytes()) {
		b.Fatalf("%d headers: the formatter's %d bytes differ from archive/tar's %d", len(hdrs), f.Len(), a.Len())
	}
}
