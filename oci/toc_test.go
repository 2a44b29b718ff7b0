package oci

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/vbatts/tar-split/tar/storage"
)

// tocJSON is the TOC as containers/storage marshals it whole.
type tocJSON struct {
	Version        int        `json:"version"`
	Entries        []tocEntry `json:"entries"`
	TarSplitDigest string     `json:"tarSplitDigest,omitempty"`
}

// TestTOCWriter: the TOC written an entry at a time is
// the JSON json.Marshal gives for the whole TOC (HTML characters, non-ASCII
// and invalid UTF-8 in names, xattrs, chunks; no entries at all).
func TestTOCWriter(t *testing.T) {
	mt := time.Unix(1700000000, 123456789).UTC()
	big := string(bytes.Repeat([]byte("x"), 3*pieceMin/2)) // an entry larger than a piece
	entries := []tocEntry{
		{Type: "dir", Name: "usr/", Mode: 0o755, ModTime: &mt},
		{Type: "reg", Name: "usr/<a&b>\u2028é\xff", Mode: 0o644, Size: 70000, UID: 1, GID: 2, ModTime: &mt,
			Xattrs: map[string]string{"user.b": "eA==", "user.a": "PD4="}, Digest: "sha256:00", Offset: 10, EndOffset: 20,
			ChunkSize: 65536, ChunkDigest: "sha256:01"},
		{Type: "chunk", Name: "usr/<a&b>\u2028é\xff", Offset: 20, ChunkSize: 4464, ChunkOffset: 65536, ChunkDigest: "sha256:02", ChunkType: "zeros"},
		{Type: "symlink", Name: "bin", Linkname: "usr/bin", Mode: 0o777},
		{Type: "char", Name: "dev/null", Devmajor: 1, Devminor: 3},
		{Type: "hardlink", Name: big, Linkname: "usr/x"},
	}
	for n := 0; n <= len(entries); n++ {
		var es []tocEntry
		if n > 0 {
			es = entries[:n]
		}
		var out bytes.Buffer
		tw := newTOCWriter(&out)
		for i := range es {
			if err := tw.add(&es[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.end("sha256:abc"); err != nil {
			t.Fatal(err)
		}
		got := out.Bytes()
		if tw.n != len(got) {
			t.Errorf("%d entries: %d bytes counted, %d written", n, tw.n, len(got))
		}
		want, err := json.Marshal(tocJSON{Version: 1, Entries: es, TarSplitDigest: "sha256:abc"})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d entries: TOC differs from json.Marshal's:\n got %.300s\nwant %.300s", n, got, want)
		}
	}
}

// FuzzTOCEntry: an entry's JSON as the TOC writer spells it is
// json.Marshal's, whatever the names, link, xattrs, numbers and time.
func FuzzTOCEntry(f *testing.F) {
	f.Add("usr/<a&b>\u2028é\xff", "", "user.a", "\x00v", int64(0o644), int64(70000), int64(1700000000), int64(123))
	f.Add("bin", "usr/bin", "", "", int64(0), int64(0), int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, name, link, xk, xv string, mode, size, sec, off int64) {
		mt := time.Unix(sec, 0).UTC()
		e := tocEntry{Type: "reg", Name: name, Linkname: link, Mode: mode, Size: size, UID: int(off), ModTime: &mt,
			Digest: link, Offset: off, EndOffset: size, ChunkSize: mode, ChunkDigest: name, ChunkType: xv}
		if xk != "" {
			e.Xattrs = map[string]string{xk: xv, "user.z": name}
		}
		want, werr := json.Marshal(e)
		got, gerr := appendTOCEntry(nil, &e)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: %v, json.Marshal's %v", gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

// TestTarSplitPacker: the entries written by the writer's packer are, byte
// for byte, those of tar-split's JSON packer (names plain, escaped, not
// UTF-8; with and without checksums and sizes; segments), and a file name
// seen before is refused as there.
func TestTarSplitPacker(t *testing.T) {
	type ent struct {
		typ     storage.Type
		name    string
		size    int64
		payload []byte
	}
	ents := []ent{
		{storage.SegmentType, "", 0, bytes.Repeat([]byte{0, 1, 2, 0xff}, 300)},
		{storage.FileType, "usr/", 0, nil},
		{storage.FileType, "usr/<a&b>\u2028é\"\\\n", 70000, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{storage.FileType, "usr/bad-\xff", 1, []byte{}},
		{storage.SegmentType, "", 0, []byte("x")},
		{storage.FileType, "usr/./x", -1, nil},
	}
	var want, got bytes.Buffer
	theirs := storage.NewJSONPacker(&want)
	ours := newTarSplitPacker(&got)
	for _, e := range ents {
		te := storage.Entry{Type: e.typ, Size: e.size, Payload: e.payload}
		te.SetName(e.name)
		if _, err := theirs.AddEntry(te); err != nil {
			t.Fatal(err)
		}
		if err := ours.add(e.typ, e.name, e.size, e.payload); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("\n got %s\nwant %s", got.Bytes(), want.Bytes())
	}
	for _, dup := range []string{"usr/x", "usr/bad-\xff"} {
		if err := ours.add(storage.FileType, dup, 0, nil); err != storage.ErrDuplicatePath {
			t.Errorf("%q again: %v", dup, err)
		}
	}
}
