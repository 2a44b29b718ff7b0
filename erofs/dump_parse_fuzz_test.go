package erofs

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseDump: parsing never panics, and a dump that parses always makes
// an image (the parser's checks cover the writer's), the same streamed
// through a small window (WriteImage) as built whole (BuildImage). Parsed
// in two halves at the same time (parseLines), it gives the same tree or
// the same error.
func FuzzParseDump(f *testing.F) {
	defer func(w uint64) { streamWindow = w }(streamWindow)
	streamWindow = BlockSize
	positive, negative := composefsAssets(f)
	for _, a := range append(positive, negative...) {
		data := readAsset(f, a)
		if len(data) > 64<<10 {
			// Keep seeds small: the first lines of the large dumps.
			lines := bytes.SplitAfterN(data, []byte("\n"), 200)
			data = bytes.Join(lines[:len(lines)-1], nil)
		}
		f.Add(data, a.strict)
	}
	f.Add([]byte("/ 0 40755 2 0 0 0 0.0 - - - user.a=1 user.a=2\n/a 0 @100644 1 0 0 0 0.0 /b\n/b 0 20000 1 0 0 0 0.0\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, strict bool) {
		opts := DumpOptions{Strict: strict, Name: "fuzz"}
		root, err := parseAs(data, opts, false)
		if want, got := dumpOrError(root, err), dumpOrError(parseAs(data, opts, true)); got != want {
			t.Fatalf("in halves:\n%.300s\nline after line:\n%.300s", got, want)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without the input name: %v", err)
			}
			return
		}
		img, err := BuildImage(root, DefaultWriteOptions())
		if err != nil {
			t.Fatalf("parsed, but BuildImage: %v", err)
		}
		if len(img)%BlockSize != 0 {
			t.Fatalf("image size %d", len(img))
		}
		var streamed bytes.Buffer
		if err := WriteImage(&streamed, root, DefaultWriteOptions()); err != nil {
			t.Fatalf("BuildImage made the image, WriteImage: %v", err)
		}
		if !bytes.Equal(streamed.Bytes(), img) {
			t.Fatalf("streamed image differs from the built one: %s", diffImages(streamed.Bytes(), img))
		}
	})
}
