package oci

import (
	"math/rand/v2"
	"testing"
)

// TestRollScan: rollRun's eight-bytes-at-a-time scan (rollScan) splits
// after the bytes the scalar rolling sum splits after, from any sums (a
// split's cut is tried at every lane of the eight, and at none), and
// leaves the sums' low 16 bits as the scalar sum has them.
func TestRollScan(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
		if i%5000 < 700 { // runs of a few values: more splits
			data[i] &= 3
		}
	}
	splits, scanned := 0, 0
	for round := range 600 {
		n := r.IntN(40000)
		if round < 40 {
			n = round
		}
		start := rollWindow + r.IntN(len(data)-n-rollWindow)
		in, out := data[start:start+n], data[start-rollWindow:start-rollWindow+n]
		s1, s2 := r.Uint32(), r.Uint32()
		// The scalar sums and splits.
		var want []int
		w1, w2 := s1, s2
		for j := range in {
			drop := uint32(out[j])
			w1 += uint32(in[j]) - drop
			w2 += w1 - rollWindow*(drop+rollCharOffset)
			if w2&rollSplitMask == rollSplitMask {
				want = append(want, j)
			}
		}
		// rollScan's, with the scalar loop for the rest as rollRun has it.
		var got []int
		g1, g2, j := s1, s2, 0
		for {
			k, n1, n2, found := rollScan(in[j:], out[j:], g1, g2)
			g1, g2, j = n1, n2, j+k
			scanned += k
			if !found {
				break
			}
			got = append(got, j-1)
		}
		for ; j < len(in); j++ {
			drop := uint32(out[j])
			g1 += uint32(in[j]) - drop
			g2 += g1 - rollWindow*(drop+rollCharOffset)
			if g2&rollSplitMask == rollSplitMask {
				got = append(got, j)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("round %d (%d bytes): splits %v, want %v", round, n, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("round %d (%d bytes): splits %v, want %v", round, n, got, want)
			}
		}
		if uint16(g1) != uint16(w1) || uint16(g2) != uint16(w2) {
			t.Fatalf("round %d (%d bytes): sums %#x %#x, want %#x %#x (low 16 bits)", round, n, g1, g2, w1, w2)
		}
		splits += len(want)
	}
	if splits < 50 {
		t.Fatalf("only %d splits", splits)
	}
	t.Logf("%d splits, %d bytes scanned eight at a time", splits, scanned)
}
