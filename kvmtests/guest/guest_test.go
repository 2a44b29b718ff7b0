package guest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"golang.org/x/sys/unix"
)

// inGuest skips unless the harness started this binary in the VM; it
// returns the mounted test disk.
func inGuest(t *testing.T) string {
	t.Helper()
	if os.Getenv("MOSSFS_KVM_GUEST") != "1" {
		t.Skip("runs only inside the kvmtests VM (go test ./kvmtests boots it)")
	}
	d := os.Getenv("MOSSFS_KVM_DISK")
	if d == "" {
		t.Fatal("MOSSFS_KVM_DISK not set by the guest init")
	}
	return d
}

func readHex(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func enableVerity(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fsverity.Enable(int(f.Fd())); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// TestVerityEnableMeasure: the kernel's digest of a file equals both the
// host's `fsverity digest` (computed when the disk was made) and this
// package's userspace computation, and the file becomes immutable.
func TestVerityEnableMeasure(t *testing.T) {
	disk := inGuest(t)
	for _, name := range []string{"data.bin", "empty.bin", "block.bin"} {
		p := filepath.Join(disk, "verity", name)
		want := readHex(t, p+".digest")
		user, err := fsverity.DigestFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(user[:]); got != want {
			t.Errorf("%s: userspace digest %s, fsverity CLI %s", name, got, want)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fsverity.Measure(int(f.Fd())); !errors.Is(err, fsverity.ErrNotEnabled) {
			t.Errorf("%s: measure before enable: %v, want ErrNotEnabled", name, err)
		}
		if err := fsverity.Enable(int(f.Fd())); err != nil {
			t.Fatalf("%s: enable: %v", name, err)
		}
		k, err := fsverity.Measure(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatalf("%s: measure: %v", name, err)
		}
		if got := hex.EncodeToString(k[:]); got != want {
			t.Errorf("%s: kernel digest %s, fsverity CLI %s", name, got, want)
		}
		if w, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			w.Close()
			t.Errorf("%s: opened for writing after verity was enabled", name)
		}
		t.Logf("%s: kernel = userspace = CLI = %s", name, want)
	}
}

func mount(t *testing.T, src, target, fstype, opts string) {
	t.Helper()
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, target, fstype, unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount -t %s %s %s -o %s: %v", fstype, src, target, opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Errorf("umount %s: %v", target, err)
		}
	})
}

// TestOverlayVerityRequire mounts an EROFS metadata image made on the host
// (mkfs.erofs over stubs carrying trusted.overlay.metacopy/redirect) over
// the object directory as a data-only lower layer with verity=require: good
// objects read back exactly, an object whose content does not match the
// digest in its metacopy gives EIO, and so does an object without verity;
// a metacopy without a digest is refused by verity=require only.
func TestOverlayVerityRequire(t *testing.T) {
	disk := inGuest(t)
	base := filepath.Join(disk, "ovl")
	objs := filepath.Join(base, "objects")
	noVerity := readHex(t, filepath.Join(base, "noverity.object"))
	err := filepath.WalkDir(objs, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, noVerity[2:]) {
			return err
		}
		enableVerity(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	meta := "/mnt/ovl-meta"
	mount(t, filepath.Join(base, "meta.erofs"), meta, "erofs", "")
	for _, mode := range []string{"require", "on"} {
		t.Run(mode, func(t *testing.T) {
			target := "/mnt/ovl-" + mode
			mount(t, "composefs", target, "overlay",
				"lowerdir="+meta+"::"+objs+",metacopy=on,redirect_dir=on,verity="+mode)
			for _, name := range []string{"good", "second"} {
				got, err := os.ReadFile(filepath.Join(target, name))
				want, _ := os.ReadFile(filepath.Join(base, "plain", name))
				if err != nil {
					t.Errorf("%s: %v", name, err)
				} else if !bytes.Equal(got, want) || len(want) == 0 {
					t.Errorf("%s: read %d bytes that differ from the original %d", name, len(got), len(want))
				}
			}
			st, err := os.Stat(filepath.Join(target, "tampered"))
			if err != nil {
				t.Fatalf("stat tampered: %v", err)
			}
			if st.Size() == 0 {
				t.Errorf("tampered: size 0 in the overlay")
			}
			_, err = os.ReadFile(filepath.Join(target, "tampered"))
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("tampered object: read gave %v, want EIO", err)
			}
			if log := dmesg(t); !strings.Contains(log, "wrong fs-verity digest") {
				t.Errorf("no overlayfs digest mismatch in the kernel log:\n%s", log)
			}
			// A digest in the metacopy needs a lower file with verity in both modes.
			if _, err = os.ReadFile(filepath.Join(target, "noverity")); !errors.Is(err, syscall.EIO) {
				t.Errorf("object without verity: read gave %v, want EIO", err)
			}
			// A metacopy without a digest is refused only by verity=require.
			got, err := os.ReadFile(filepath.Join(target, "nodigest"))
			switch mode {
			case "require":
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("metacopy without digest under verity=require: %v, want EIO", err)
				}
			case "on":
				want, _ := os.ReadFile(filepath.Join(base, "plain", "nodigest"))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("metacopy without digest under verity=on: %v (%d bytes), want the content", err, len(got))
				}
			}
		})
	}
}
