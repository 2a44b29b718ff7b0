package erofs

import (
	"fmt"
)

// diffImages describes the first difference between two images
// structurally: header, superblock, or the inode / region holding it.
func diffImages(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("size %d, want %d; %s", len(got), len(want), diffImagesAt(got, want))
	}
	return diffImagesAt(got, want)
}

func diffImagesAt(got, want []byte) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			region := "data"
			switch {
			case i < ComposefsHeaderSize:
				region = "composefs header"
			case i >= SuperblockOffset && i < SuperblockOffset+SuperblockSize:
				region = fmt.Sprintf("superblock offset %d", i-SuperblockOffset)
			}
			lo, hi := i&^31, min(n, (i&^31)+64)
			return fmt.Sprintf("first difference at byte %d (%s, slot nid %d, +%d in block %d)\n got  %x\n want %x", i, region, i/32, i%4096, i/4096, got[lo:hi], want[lo:hi])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("identical for the first %d bytes", n)
	}
	return "identical"
}
