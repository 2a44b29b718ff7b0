package oci

import (
	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkFrameWriter: one worker's cutting, hashing and compressing of
// a file's content into zstd:chunked frames (random bytes with runs of
// zeros, 1 MiB per op), in each Chunking.
func BenchmarkFrameWriter(b *testing.B) {
	content := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range content {
		content[i] = byte(r.Uint32())
	}
	for i := 0; i < len(content); i += 50_000 {
		clear(content[i : i+min(3000, len(content)-i)])
	}
	for _, c := range []Chunking{ChunkFiles, ChunkRolling} {
		b.Run(string(c), func(b *testing.B) {
			fw := newFrameWriter(c)
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
		})
	}
}

// BenchmarkRawFrame: 64 KiB frames of random bytes (the average
// zstd:chunked chunk), each from another place of 64 MiB as a layer's
// are, written raw, against the encoder's EncodeAll. Each frame is read
// through first, as the rolling sum reads it before its frame is written.
func BenchmarkRawFrame(b *testing.B) {
	const frame = 64 << 10
	all := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range all {
		all[i] = byte(r.Uint32())
	}
	dst := make([]byte, 0, 2*frame)
	// eachFrame hands frame after frame of all to write, from memory the
	// previous rounds have not just warmed.
	eachFrame := func(b *testing.B, write func(in []byte)) {
		b.SetBytes(frame)
		i := 0
		for b.Loop() {
			in := all[i*frame:][:frame]
			i = (i + 1) % (len(all) / frame)
			touch(in)
			write(in)
		}
	}
	b.Run("raw", func(b *testing.B) {
		var raw rawFramer
		eachFrame(b, func(in []byte) { raw.appendFrame(dst[:0], in) }) // a rare frame is refused
	})
	b.Run("encoder", func(b *testing.B) {
		enc := newFrameEncoder()
		eachFrame(b, func(in []byte) { enc.EncodeAll(in, dst[:0]) })
	})
}

var touched byte

func touch(b []byte) {
	var x byte
	for i := 0; i < len(b); i += 64 {
		x += b[i]
	}
	touched += x
}
