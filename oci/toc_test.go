package oci

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
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
