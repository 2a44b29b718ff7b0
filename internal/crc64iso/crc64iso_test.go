package crc64iso

import (
	"hash/crc64"
	"math/rand/v2"
	"testing"
)

var isoTable = crc64.MakeTable(crc64.ISO)

// TestUpdate: every length from 0 to 1100 (the table only, folding with
// each number of blocks and of bytes left over), large inputs, any state
// and inputs fed in random pieces, against hash/crc64.
func TestUpdate(t *testing.T) {
	if !canFold {
		t.Log("no PCLMULQDQ here: the table only")
	}
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20+77)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for n := 0; n <= 1100; n++ {
		for _, off := range []int{0, 3} {
			p := data[off : off+n]
			for _, crc := range []uint64{0, 0xFFFFFFFFFFFFFFFF, r.Uint64()} {
				if got, want := Update(crc, p), crc64.Update(crc, isoTable, p); got != want {
					t.Fatalf("len %d off %d crc %x: %x, hash/crc64 %x", n, off, crc, got, want)
				}
			}
		}
	}
	for _, n := range []int{1 << 16, 1<<16 + 15, len(data)} {
		if got, want := Checksum(data[:n]), crc64.Checksum(data[:n], isoTable); got != want {
			t.Fatalf("len %d: %x, hash/crc64 %x", n, got, want)
		}
	}
	zeros := make([]byte, 5000)
	if got, want := Checksum(zeros), crc64.Checksum(zeros, isoTable); got != want {
		t.Fatalf("zeros: %x, hash/crc64 %x", got, want)
	}
	var crc uint64
	for p := data; len(p) > 0; {
		k := min(len(p), r.IntN(3000))
		crc = Update(crc, p[:k])
		p = p[k:]
	}
	if want := crc64.Checksum(data, isoTable); crc != want {
		t.Fatalf("in pieces: %x, hash/crc64 %x", crc, want)
	}
	if s := AppendSum(nil, 0x0102030405060708); string(s) != "\x01\x02\x03\x04\x05\x06\x07\x08" {
		t.Fatalf("AppendSum: %x", s)
	}
}

func FuzzUpdate(f *testing.F) {
	f.Add(uint64(0), make([]byte, 200))
	f.Add(uint64(1), []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefxyz"))
	f.Fuzz(func(t *testing.T, crc uint64, p []byte) {
		if got, want := Update(crc, p), crc64.Update(crc, isoTable, p); got != want {
			t.Fatalf("len %d crc %x: %x, hash/crc64 %x", len(p), crc, got, want)
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	data := make([]byte, 64<<10)
	b.SetBytes(int64(len(data)))
	b.Run("crc64iso", func(b *testing.B) {
		for b.Loop() {
			Update(0, data)
		}
	})
	b.Run("hash-crc64", func(b *testing.B) {
		for b.Loop() {
			crc64.Update(0, isoTable, data)
		}
	})
}
