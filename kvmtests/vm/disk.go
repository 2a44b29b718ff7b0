package vm

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// MakeExt4 creates a raw ext4 image of sizeMB at path from the contents of
// dir (mkfs.ext4 -d; no root or loop device needed) with the verity
// feature and 4096-byte blocks (fs-verity needs block size == page size).
func MakeExt4(path, dir, label string, sizeMB int) error {
	os.Remove(path)
	args := []string{"-q", "-F", "-b", "4096", "-O", "verity", "-L", label, "-E", "lazy_itable_init=0,lazy_journal_init=0"}
	if dir != "" {
		args = append(args, "-d", dir)
	}
	args = append(args, path, strconv.Itoa(sizeMB)+"M")
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", path, err, out)
	}
	return nil
}
