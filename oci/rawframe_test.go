package oci

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// encoderFrame is the frame frameWriter.frame's encoder writes for in:
// EncodeAll's below a block, the streaming encoder's from a block.
func encoderFrame(t *testing.T, in []byte) []byte {
	t.Helper()
	enc := newFrameEncoder()
	if len(in) < frameBlock {
		return enc.EncodeAll(in, nil)
	}
	var b bytes.Buffer
	enc.Reset(&b)
	if _, err := enc.Write(in); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRawFrames: a frame written without the encoder is the encoder's,
// byte for byte, for every size class of the frame header (each size to
// 1100 bytes, around every power of two and the content size's
// thresholds, whole blocks and one byte more or less, a few MiB), and
// random contents give such frames; contents where the encoder finds a
// match are left to it.
func TestRawFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	sizes := []int{}
	for n := 1; n <= 1100; n++ {
		sizes = append(sizes, n)
	}
	for p := 11; p <= 22; p++ {
		for d := -2; d <= 2; d++ {
			sizes = append(sizes, 1<<p+d)
		}
	}
	for d := -2; d <= 2; d++ {
		sizes = append(sizes, 65536+256+d, 3*frameBlock+d, 2*frameBlock+d)
	}
	for range 40 {
		sizes = append(sizes, 1+r.IntN(3<<20))
	}
	var raw rawFramer
	refused := 0
	check := func(in []byte, wantRaw bool) {
		t.Helper()
		want := encoderFrame(t, in)
		got, ok := raw.appendFrame([]byte("prefix"), in)
		if !ok {
			if wantRaw {
				refused++
			}
			if string(got) != "prefix" {
				t.Fatalf("%d bytes: refused, but appended", len(in))
			}
			return
		}
		if !wantRaw {
			t.Fatalf("%d bytes: written raw, where the encoder found a match", len(in))
		}
		if !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("%d bytes: raw frame differs from the encoder's\n got %x\nwant %x", len(in), head(got[len("prefix"):]), head(want))
		}
	}
	for _, n := range sizes {
		check(random(n), true)
	}
	// A birthday duplicate among ~900 probes of random data is rare.
	if refused > len(sizes)/50 {
		t.Errorf("%d of %d random frames refused", refused, len(sizes))
	}

	// Repeats that no probe meets are no matches: such contents too are
	// the encoder's raw frames.
	in := random(100000)
	copy(in[90001:90101], in[60001:60101]) // probes are ~700 apart there
	check(in, true)

	// The same 4 bytes at two probes, in one block or in different blocks
	// of a frame, are a match to the encoder: refused.
	in = random(100000)
	copy(in[blockProbes(len(in))[500]:][:4], in[blockProbes(len(in))[20]:][:4])
	check(in, false)
	in = random(3*frameBlock + 100)
	copy(in[2*frameBlock+int(zstdProbes[300]):][:4], in[zstdProbes[7]:][:4])
	check(in, false)
	// 150 bytes repeated at each later place of a frame of 8000: just
	// enough for the encoder to write a compressed block when it finds
	// them (it probes the copy where it probed the original) and a raw
	// one when not. Written raw only where the encoder writes it raw.
	base := random(8000)
	for x := 160; x+150 <= len(base); x++ {
		in := bytes.Clone(base)
		copy(in[x:x+150], in[5:155])
		want := encoderFrame(t, in)
		if got, ok := raw.appendFrame(nil, in); ok && !bytes.Equal(got, want) {
			t.Fatalf("bytes 5-155 again at %d: raw frame differs from the encoder's", x)
		}
	}

	// Compressible contents (tar headers, text, zeros).
	check(bytes.Repeat([]byte("mossfs exports layers. "), 4000), false)
	check(make([]byte, 5000), false)
}

func head(b []byte) []byte { return b[:min(len(b), 48)] }
