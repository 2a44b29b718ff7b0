package oci

// rollScan8 rolls in[:n] (n rounded down to a multiple of 8), out[i]
// being the byte that leaves the window as in[i] enters it, from the sums
// s1 and s2, eight bytes at a time in 16-bit lanes (SSE2, every amd64):
// a split looks only at the low 16 bits of s2, and those depend only on
// the low 16 bits of the sums. It stops after the first byte on a split
// (found) and returns how many bytes it rolled and the low 16 bits of the
// sums after them.
//
//go:noescape
func rollScan8(in, out *byte, n int, s1, s2 uint32) (k int, r1, r2 uint32, found bool)

// rollScan is rollScan8 on slices (out at least as long as in).
func rollScan(in, out []byte, s1, s2 uint32) (int, uint32, uint32, bool) {
	if len(in) < 8 {
		return 0, s1, s2, false
	}
	_ = out[len(in)-1]
	return rollScan8(&in[0], &out[0], len(in), s1, s2)
}

// rollScan8 finds splits as a 16-bit lane equal to all ones.
var _ [0]struct{} = [rollSplitMask - 0xffff]struct{}{}
