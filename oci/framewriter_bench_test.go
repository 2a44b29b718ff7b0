package oci

import (
	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkFrameWriter: one worker's cutting, hashing and compressing of
// a file's content into zstd:chunked frames (random bytes with runs of
// zeros, 1 MiB per op).
func BenchmarkFrameWriter(b *testing.B) {
	content := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range content {
		content[i] = byte(r.Uint32())
	}
	for i := 0; i < len(content); i += 50_000 {
		clear(content[i : i+min(3000, len(content)-i)])
	}
	fw := newFrameWriter()
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		if err := fw.begin(io.Discard, nil); err != nil {
			b.Fatal(err)
		}
		if err := fw.feed(content); err != nil {
			b.Fatal(err)
		}
		if _, err := fw.finish(content); err != nil {
			b.Fatal(err)
		}
	}
}
