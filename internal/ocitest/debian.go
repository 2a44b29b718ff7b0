package ocitest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// DebianCacheDir holds the debootstrapped tree (rootfs) and its tar
// (debian.tar) between benchmark runs; delete it to rebuild.
const DebianCacheDir = "/var/tmp/mossfs-bench-debian"

// DebianPackages are added to the minbase variant to bring the tree near
// 1 GB (compilers, Go's toolchain and sources, Python: many files of every
// size, as in real images).
const DebianPackages = "build-essential,clang-14,llvm-14,git,python3,golang-1.19-go,vim"

// DebianTar returns the path of an uncompressed tar layer of a Debian 12
// tree made with `debootstrap --variant=minbase --include=DebianPackages
// bookworm` from $MOSSFS_DEBIAN_MIRROR (default http://deb.debian.org/debian).
// The tar leaves out apt's downloaded packages and lists. Both tree and
// tar are cached in DebianCacheDir, built under temporary names
// and renamed when complete, so an interrupted build is redone, not reused.
// It needs root and debootstrap (scripts/install-deps.sh installs it).
func DebianTar(tb testing.TB) string {
	tb.Helper()
	tarPath := filepath.Join(DebianCacheDir, "debian.tar")
	if fileExists(tarPath) {
		return tarPath
	}
	if os.Geteuid() != 0 {
		tb.Skip("debootstrap needs root")
	}
	if err := os.MkdirAll(DebianCacheDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	rootfs := filepath.Join(DebianCacheDir, "rootfs")
	if !fileExists(rootfs) {
		bin := requireTool(tb, "debootstrap")
		mirror := os.Getenv("MOSSFS_DEBIAN_MIRROR")
		if mirror == "" {
			mirror = "http://deb.debian.org/debian"
		}
		tmp := rootfs + ".tmp"
		if err := os.RemoveAll(tmp); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, "--variant=minbase", "--include="+DebianPackages, "bookworm", tmp, mirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("debootstrap bookworm from %s: %v\n%s", mirror, err, tailBytes(out, 4000))
		}
		if err := os.Rename(tmp, rootfs); err != nil {
			tb.Fatal(err)
		}
	}
	// Top-level names as arguments, so member names carry no "./" prefix
	// (as in layers that image builders write). The downloaded .debs and
	// apt lists stay out, as image builds remove them (apt-get clean).
	ents, err := os.ReadDir(rootfs)
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"--numeric-owner", "--sort=name", "--xattrs", "--xattrs-include=*",
		"--exclude=var/cache/apt/archives/*.deb", "--exclude=var/lib/apt/lists/*", "-C", rootfs, "-cf", tarPath + ".tmp", "--"}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	args = append(args, names...)
	if out, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		tb.Fatalf("tar of %s: %v\n%s", rootfs, err, tailBytes(out, 4000))
	}
	if err := os.Rename(tarPath+".tmp", tarPath); err != nil {
		tb.Fatal(err)
	}
	return tarPath
}

// AlterTar returns a copy of the tar stream layer in which every tenth
// non-empty regular file has other content (its first byte inverted): an
// image B that shares 90% of the files of layer's image.
func AlterTar(tb testing.TB, layer []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tr := tar.NewReader(bytes.NewReader(layer))
	tw := tar.NewWriter(&buf)
	regular := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		if regular%10 == 0 {
			body[0] ^= 0xff
		}
		regular++
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
