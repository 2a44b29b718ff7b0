package populate

import (
	"bytes"
	"testing"
)

// TestKeepsContents: populating memory that holds data (whole pages and
// ragged edges) changes none of it, and small or empty slices are fine.
func TestKeepsContents(t *testing.T) {
	b := make([]byte, 1<<20+123)
	for i := range b {
		b[i] = byte(i * 7)
	}
	want := bytes.Clone(b)
	Bytes(b[5:])
	Bytes(b[:100])
	Bytes(nil)
	if !bytes.Equal(b, want) {
		t.Fatal("contents changed")
	}
	s := make([]uint64, 1<<16)
	for i := range s {
		s[i] = uint64(i)
	}
	Slice(s)
	Slice([]int(nil))
	for i, v := range s {
		if v != uint64(i) {
			t.Fatalf("element %d = %d", i, v)
		}
	}
}

func BenchmarkFreshMemory(b *testing.B) {
	const size = 16 << 20
	b.Run("faults", func(b *testing.B) {
		for b.Loop() {
			m := make([]byte, size)
			for i := 0; i < len(m); i += 4096 {
				m[i] = 1
			}
		}
	})
	b.Run("populated", func(b *testing.B) {
		for b.Loop() {
			m := make([]byte, size)
			Bytes(m)
			for i := 0; i < len(m); i += 4096 {
				m[i] = 1
			}
		}
	})
}
