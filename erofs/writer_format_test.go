package erofs

import "testing"

// Values verified against mkcomposefs images (reference §7.3).
func TestXattrFilterBit(t *testing.T) {
	if b := XattrFilterBit(XattrIndexTrusted, "overlay.metacopy"); b != 31 {
		t.Errorf("overlay.metacopy bit = %d, want 31", b)
	}
	var set uint32
	for _, x := range []struct {
		idx uint8
		s   string
	}{{3, ""}, {4, "overlay.metacopy"}, {1, "foo"}} {
		set |= 1 << XattrFilterBit(x.idx, x.s)
	}
	if f := ^set; f != 0x7fdfefff {
		t.Errorf("filter = %#x, want 0x7fdfefff", f)
	}
}

func TestXXH32(t *testing.T) {
	for _, c := range []struct {
		s    string
		seed uint32
		want uint32
	}{
		{"", 0, 0x02CC5D05},
		{"abc", 0, 0x32D153FF},
		{"Nobody inspects the spammish repetition", 0, 0xE2293B2F},
	} {
		if got := xxh32(c.s, c.seed); got != c.want {
			t.Errorf("xxh32(%q, %d) = %#x, want %#x", c.s, c.seed, got, c.want)
		}
	}
}
