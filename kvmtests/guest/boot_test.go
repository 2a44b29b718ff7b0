package guest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/mossfs/mossfs/fsverity"
	"golang.org/x/sys/unix"
)

// bootFixture is a root filesystem with a state of three signed
// transactions, composed in the guest so the objects carry fs-verity.
type bootFixture struct {
	sysroot, state string
	keyA, keyB     string // private keys; A signed everything
	images         map[uint64]string
	data           []byte // /usr/share/data.bin in every transaction
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func newBootFixture(t *testing.T, disk string) *bootFixture {
	f := &bootFixture{sysroot: filepath.Join(disk, "bootroot"), images: map[uint64]string{}, data: pattern(64<<10, 7)}
	f.state = filepath.Join(f.sysroot, ".moss")
	for _, d := range []string{"usr", "etc", "var"} {
		os.MkdirAll(filepath.Join(f.sysroot, d), 0o755)
	}
	src := filepath.Join(disk, "bootsrc")
	os.MkdirAll(filepath.Join(src, "share"), 0o755)
	os.WriteFile(filepath.Join(src, "share", "data.bin"), f.data, 0o644)
	os.WriteFile(filepath.Join(src, "share", "extra.bin"), pattern(32<<10, 8), 0o644)
	for i := 1; i <= 3; i++ {
		os.WriteFile(filepath.Join(src, "release"), []byte(fmt.Sprintf("release %d\n", i)), 0o644)
		args := []string{"compose", "--root", f.state, "--tree", src, "-q", "--json"}
		if i > 1 {
			args = append(args, "--from", strconv.Itoa(i-1))
		}
		var res struct {
			Transaction struct {
				ID    uint64 `json:"id"`
				Image string `json:"image"`
			} `json:"transaction"`
		}
		out := run(t, "/bin/moss-compose", args...)
		tx := &res.Transaction
		if err := json.Unmarshal([]byte(out), &res); err != nil || tx.ID != uint64(i) {
			t.Fatalf("compose %d: %v %q", i, err, out)
		}
		f.images[tx.ID] = tx.Image
	}
	f.keyA = filepath.Join(disk, "keyA")
	f.keyB = filepath.Join(disk, "keyB")
	run(t, "/bin/moss-compose", "keygen", f.keyA)
	run(t, "/bin/moss-compose", "keygen", f.keyB)
	run(t, "/bin/moss-compose", "state", "sign", "--root", f.state, "--key", f.keyA, "1", "2", "3")
	return f
}

type bootResult struct {
	TX       uint64 `json:"tx"`
	Role     string `json:"role"`
	Image    string `json:"image"`
	Measured bool   `json:"image_digest_measured"`
	Mount    *struct {
		Method string `json:"method"`
		Verity string `json:"verity"`
	} `json:"mount"`
	Rejected []struct {
		TX     uint64 `json:"tx"`
		Reason string `json:"reason"`
	} `json:"rejected"`
}

// boot runs mossfs boot with cmdline; it returns the outcome and the console
// messages, and unmounts /usr at the end of the test.
func (f *bootFixture) boot(t *testing.T, cmdline string, extra ...string) (*bootResult, string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(file, []byte("console=ttyS0 root=/dev/vda rw "+cmdline+"\n"), 0o644)
	args := append([]string{"boot", "--sysroot", f.sysroot, "--cmdline", file, "--json"}, extra...)
	cmd := exec.Command("/bin/mossfs", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("mossfs boot %q:\n%s", cmdline, stderr.String())
	if err != nil {
		return nil, stderr.String(), err
	}
	target := filepath.Join(f.sysroot, "usr")
	t.Cleanup(func() {
		// A later boot in the same subtest replaces the mount (tucked
		// beneath, old one detached), so there may be nothing left here.
		for isMountPoint(t, target) {
			if err := unix.Unmount(target, 0); err != nil {
				t.Errorf("umount %s: %v", target, err)
				return
			}
		}
	})
	var r bootResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("mossfs boot --json: %v: %q", err, stdout.String())
	}
	return &r, stderr.String(), nil
}

// expect checks that transaction tx was mounted (its /usr/release reads
// back) with verity=require, after rejecting the listed ones for reasons
// containing the given texts.
func (f *bootFixture) expect(t *testing.T, r *bootResult, tx uint64, rejected ...string) {
	t.Helper()
	if r.TX != tx {
		t.Fatalf("booted transaction %d, want %d", r.TX, tx)
	}
	rel, err := os.ReadFile(filepath.Join(f.sysroot, "usr", "release"))
	if err != nil || string(rel) != fmt.Sprintf("release %d\n", tx) {
		t.Errorf("/usr/release = %q, %v; want release %d", rel, err, tx)
	}
	data, err := os.ReadFile(filepath.Join(f.sysroot, "usr", "share", "data.bin"))
	if err != nil || !bytes.Equal(data, f.data) {
		t.Errorf("/usr/share/data.bin: %v (%d bytes)", err, len(data))
	}
	if r.Mount == nil || r.Mount.Verity != "require" {
		t.Errorf("mount %+v, want verity=require (objects composed in the VM carry fs-verity)", r.Mount)
	}
	if len(r.Rejected) != len(rejected) {
		t.Fatalf("rejected %+v, want %d rejections %q", r.Rejected, len(rejected), rejected)
	}
	for i, want := range rejected {
		if !strings.Contains(r.Rejected[i].Reason, want) {
			t.Errorf("rejection %d: %q does not say %q", i, r.Rejected[i].Reason, want)
		}
	}
	// /etc and /var stay on the root filesystem: only /usr is a mount.
	for _, d := range []string{"etc", "var"} {
		if isMountPoint(t, filepath.Join(f.sysroot, d)) {
			t.Errorf("%s is a mount point", d)
		}
	}
}

func isMountPoint(t *testing.T, p string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// TestBoot runs mossfs boot against many command lines (--cmdline) in one VM.
func TestBoot(t *testing.T) {
	disk := inGuest(t)
	f := newBootFixture(t, disk)
	pubA, pubB := f.keyA+".pub", f.keyB+".pub"

	t.Run("tx", func(t *testing.T) {
		r, _, err := f.boot(t, "moss.tx=2 moss.fallback=1")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 2)
	})
	t.Run("fstx", func(t *testing.T) {
		r, _, err := f.boot(t, "moss.fstx=3")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 3)
	})
	t.Run("quoted-and-signed", func(t *testing.T) {
		r, _, err := f.boot(t, `x="moss.tx=9 y" "moss.tx=1"`, "--pubkey", pubA)
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 1)
	})
	t.Run("pinned-digest", func(t *testing.T) {
		// With fs-verity on the image, boot takes the kernel's measurement
		// instead of hashing the image itself.
		enableVerity(t, filepath.Join(f.state, "images", f.images[3]))
		r, _, err := f.boot(t, "moss.tx=3 moss.digest=sha256:"+f.images[3])
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 3)
		if !r.Measured {
			t.Error("image digest was computed although the image has fs-verity")
		}
	})
	t.Run("read-only-root", func(t *testing.T) {
		// The initramfs usually has the root filesystem read-only.
		ro := "/mnt/rosysroot"
		os.MkdirAll(ro, 0o755)
		if err := unix.Mount(f.sysroot, ro, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(ro, unix.MNT_DETACH)
		if err := unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
		rof := *f
		rof.sysroot, rof.state = ro, filepath.Join(ro, ".moss")
		r, _, err := rof.boot(t, "moss.tx=1", "--pubkey", pubA)
		if err != nil {
			t.Fatal(err)
		}
		rof.expect(t, r, 1)
	})
	t.Run("missing-falls-back", func(t *testing.T) {
		r, msgs, err := f.boot(t, "moss.tx=9 moss.fallback=8,2")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 2, "does not exist", "does not exist")
		if !strings.Contains(msgs, "transaction 9 (moss.tx) cannot be booted") || !strings.Contains(msgs, "falling back to transaction 8") {
			t.Errorf("console messages do not explain the fallback:\n%s", msgs)
		}
	})
	t.Run("digest-mismatch-falls-back", func(t *testing.T) {
		r, _, err := f.boot(t, "moss.tx=3 moss.digest=sha256:"+f.images[2]+" moss.fallback=1")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 1, "does not match the pinned")
	})
	t.Run("wrong-key-falls-back", func(t *testing.T) {
		// 2 signed with key B; booting with A's public key.
		run(t, "/bin/moss-compose", "state", "sign", "--root", f.state, "--key", f.keyB, "2")
		defer run(t, "/bin/moss-compose", "state", "sign", "--root", f.state, "--key", f.keyA, "2")
		r, _, err := f.boot(t, "moss.tx=2 moss.fallback=1", "--pubkey", pubA)
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 1, "signature does not verify")
		// And with B's key only 2 passes.
		r2, _, err := f.boot(t, "moss.tx=3 moss.fallback=2", "--pubkey", pubB)
		if err != nil {
			t.Fatal(err)
		}
		if r2.TX != 2 {
			t.Errorf("with key B booted %d, want 2", r2.TX)
		}
	})
	t.Run("substituted-signature-falls-back", func(t *testing.T) {
		// An old signed transaction's signature does not stand for another id.
		sig3 := filepath.Join(f.state, "transactions", "3.sig")
		orig, _ := os.ReadFile(sig3)
		one, _ := os.ReadFile(filepath.Join(f.state, "transactions", "1.sig"))
		os.WriteFile(sig3, one, 0o644)
		defer os.WriteFile(sig3, orig, 0o644)
		r, _, err := f.boot(t, "moss.tx=3 moss.fallback=2", "--pubkey", pubA)
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 2, "signature does not verify")
	})
	t.Run("unmountable-falls-back", func(t *testing.T) {
		// A transaction whose image matches its digest but is no EROFS image.
		junk := []byte("not an erofs image\n")
		d := fsverity.Sum(junk)
		h := hex.EncodeToString(d[:])
		os.WriteFile(filepath.Join(f.state, "images", h), junk, 0o644)
		meta := fmt.Sprintf(`{"id":7,"time":"2026-01-01T00:00:00Z","image":%q,"inputs":[],"counts":{}}`, h)
		mp := filepath.Join(f.state, "transactions", "7.json")
		os.WriteFile(mp, []byte(meta), 0o644)
		defer os.Remove(mp)
		r, _, err := f.boot(t, "moss.tx=7 moss.fallback=3")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 3, "mount")
	})
	t.Run("nothing-usable-fails", func(t *testing.T) {
		_, msgs, err := f.boot(t, "moss.tx=9 moss.fallback=8")
		if err == nil {
			t.Fatal("mossfs boot succeeded with no usable transaction")
		}
		if !strings.Contains(msgs, "no usable transaction") {
			t.Errorf("messages: %s", msgs)
		}
		if isMountPoint(t, filepath.Join(f.sysroot, "usr")) {
			t.Error("/usr mounted although boot failed")
		}
	})
	t.Run("pinned-requires-verity", func(t *testing.T) {
		// An object whose fs-verity was stripped (same content, replaced
		// by a copy without verity): a pinned or signed boot still mounts
		// with verity=require, so it reads as EIO instead of unchecked.
		extra := pattern(32<<10, 8)
		d := fsverity.Sum(extra)
		h := hex.EncodeToString(d[:])
		obj := filepath.Join(f.state, "cas", "objects", h[:2], h[2:])
		tmp := obj + ".tmp"
		if err := os.WriteFile(tmp, extra, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, obj); err != nil {
			t.Fatal(err)
		}
		defer enableVerity(t, obj)
		for _, c := range []struct {
			cmdline string
			extra   []string
		}{
			{"moss.tx=2 moss.digest=sha256:" + f.images[2], nil},
			{"moss.tx=2", []string{"--pubkey", pubA}},
		} {
			r, _, err := f.boot(t, c.cmdline, c.extra...)
			if err != nil {
				t.Fatal(err)
			}
			f.expect(t, r, 2)
			if _, err := os.ReadFile(filepath.Join(f.sysroot, "usr", "share", "extra.bin")); !errors.Is(err, syscall.EIO) {
				t.Errorf("%s %v: object without verity read gave %v, want EIO", c.cmdline, c.extra, err)
			}
		}
	})
	t.Run("tampered-image-falls-back", func(t *testing.T) {
		img := filepath.Join(f.state, "images", f.images[3])
		orig, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]byte(nil), orig...)
		bad[len(bad)-1] ^= 0x01
		// The image may carry fs-verity (immutable): replace it as an
		// attacker with the disk would.
		tmp := img + ".tmp"
		os.WriteFile(tmp, bad, 0o644)
		if err := os.Rename(tmp, img); err != nil {
			t.Fatal(err)
		}
		defer func() {
			os.WriteFile(tmp, orig, 0o644)
			os.Rename(tmp, img)
		}()
		r, _, err := f.boot(t, "moss.tx=3 moss.fallback=2")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 2, "corrupt")
	})
	// Last: corrupts an object on disk for good.
	t.Run("tampered-object-reads-EIO", func(t *testing.T) {
		r, _, err := f.boot(t, "moss.tx=2 moss.fallback=1")
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, r, 2)
		d := fsverity.Sum(f.data)
		h := hex.EncodeToString(d[:])
		obj := filepath.Join(f.state, "cas", "objects", h[:2], h[2:])
		corruptOnDisk(t, obj, 5000)
		// The image is fine, so boot still picks 2: a tampered object is
		// found only when read, and reads as EIO.
		if err := unix.Unmount(filepath.Join(f.sysroot, "usr"), 0); err != nil {
			t.Fatal(err)
		}
		dropCaches(t)
		r, _, err = f.boot(t, "moss.tx=2 moss.fallback=1")
		if err != nil {
			t.Fatal(err)
		}
		if r.TX != 2 || len(r.Rejected) != 0 {
			t.Fatalf("booted %d after %d rejections; a tampered object must not cause a fallback", r.TX, len(r.Rejected))
		}
		if rel, err := os.ReadFile(filepath.Join(f.sysroot, "usr", "release")); err != nil || string(rel) != "release 2\n" {
			t.Errorf("untouched file: %q %v", rel, err)
		}
		_, err = os.ReadFile(filepath.Join(f.sysroot, "usr", "share", "data.bin"))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("tampered object read: %v, want EIO", err)
		}
		// It is fs-verity's Merkle tree that caught it.
		if log := dmesg(t); !strings.Contains(log, "FILE CORRUPTED") {
			t.Errorf("no fs-verity corruption report in the kernel log:\n%s", log)
		}
	})
}

// corruptOnDisk flips a byte of file p at offset off directly on the block
// device underneath (found with FIBMAP), bypassing the filesystem, as an
// offline attacker would.
func corruptOnDisk(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	unix.Fstatfs(int(f.Fd()), &st)
	bs := int64(st.Bsize)
	blk := int32(off / bs)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 1 /* FIBMAP */, uintptr(unsafe.Pointer(&blk))); e != 0 {
		t.Fatalf("FIBMAP %s: %v", p, e)
	}
	f.Close()
	if blk == 0 {
		t.Fatalf("FIBMAP %s: block %d is a hole", p, off/bs)
	}
	dev, err := os.OpenFile(os.Getenv("MOSSFS_KVM_DEV"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	pos := int64(blk)*bs + off%bs
	b := make([]byte, 1)
	if _, err := dev.ReadAt(b, pos); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := dev.WriteAt(b, pos); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
}

func dropCaches(t *testing.T) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dmesg returns the kernel log (busybox dmesg).
func dmesg(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dmesg").CombinedOutput()
	if err != nil {
		t.Fatalf("dmesg: %v", err)
	}
	return string(out)
}
