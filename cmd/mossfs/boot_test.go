package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// The VM (kvmtests/guest TestBoot) runs mossfs boot on a kernel with
// fs-verity; these host tests cover the selection with --dry-run and one
// real mount (without verity: the host kernel has none).

// bootState is a state root with transactions 1–3, each an image holding
// /release ("release N" plus padding, an external object) written with the
// project's EROFS writer, and a key that signed 1 and 2.
type bootState struct {
	root, key string
	images    map[uint64]string
}

func newBootState(t *testing.T) *bootState {
	t.Helper()
	b := &bootState{root: filepath.Join(t.TempDir(), "sysroot", ".moss"), images: map[uint64]string{}}
	st, err := state.Create(b.root)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 3; id++ {
		content := []byte(fmt.Sprintf("release %d\n%s", id, strings.Repeat("x", 5000)))
		d, err := st.Store().PutBytes(content)
		if err != nil {
			t.Fatal(err)
		}
		root := tree.NewDir("", 0o755)
		root.AddChild(&tree.Node{Name: "release", Mode: tree.TypeReg | 0o644, Nlink: 1,
			Size: uint64(len(content)), Payload: cas.Payload(d), Digest: d[:]})
		img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
		if err != nil {
			t.Fatal(err)
		}
		di := fsverity.Sum(img)
		h := hex.EncodeToString(di[:])
		if err := os.WriteFile(filepath.Join(b.root, "images", h), img, 0o644); err != nil {
			t.Fatal(err)
		}
		meta, _ := json.Marshal(state.Transaction{ID: id, Time: time.Now().UTC(), Image: h, Inputs: []state.Input{}})
		if err := os.WriteFile(filepath.Join(b.root, "transactions", fmt.Sprintf("%d.json", id)), meta, 0o644); err != nil {
			t.Fatal(err)
		}
		b.images[id] = h
	}
	if err := st.Store().Sync(); err != nil {
		t.Fatal(err)
	}
	b.key = filepath.Join(t.TempDir(), "key")
	if _, err := sign.GenerateKey(b.key); err != nil {
		t.Fatal(err)
	}
	priv, _ := sign.LoadPrivateKey(b.key)
	for id := uint64(1); id <= 2; id++ {
		d, _ := hex.DecodeString(b.images[id])
		if _, err := sign.WriteSignature(b.root, priv, id, [32]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// boot runs "mossfs boot --json --root … --cmdline FILE args…" in-process.
func (b *bootState) boot(t *testing.T, cmdline string, args ...string) (bootOutcome, string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(file, []byte(cmdline+"\n"), 0o644)
	bootCmd.Flags().VisitAll(func(f *pflag.Flag) { f.Value.Set(f.DefValue); f.Changed = false })
	var out, errb bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	defer rootCmd.SetOut(nil)
	defer rootCmd.SetErr(nil)
	rootCmd.SetArgs(append([]string{"boot", "--json", "--root", b.root, "--sysroot", filepath.Dir(b.root), "--cmdline", file}, args...))
	err := rootCmd.Execute()
	var o bootOutcome
	if err == nil {
		if jerr := json.Unmarshal(out.Bytes(), &o); jerr != nil {
			t.Fatalf("--json output: %v: %q", jerr, out.String())
		}
	}
	return o, errb.String(), err
}

func TestBootSelection(t *testing.T) {
	b := newBootState(t)
	os.WriteFile(filepath.Join(b.root, "active"), []byte("3\n"), 0o644)
	pub := b.key + ".pub"
	for _, c := range []struct {
		name, cmdline string
		args          []string
		want          uint64
		rejected      []string
	}{
		{"tx", "quiet moss.tx=2 moss.fallback=1", nil, 2, nil},
		{"fstx", "moss.fstx=1", nil, 1, nil},
		{"tx-wins-over-fstx", "moss.fstx=1 moss.tx=2", nil, 2, nil},
		{"active-without-tx", "root=/dev/vda", nil, 3, nil},
		{"missing", "moss.tx=9 moss.fallback=8,1", nil, 1, []string{"does not exist", "does not exist"}},
		{"pinned", "moss.tx=3 moss.digest=sha256:" + b.images[3], nil, 3, nil},
		{"pin-mismatch", "moss.tx=3 moss.digest=sha256:" + b.images[2] + " moss.fallback=2", nil, 2, []string{"does not match the pinned"}},
		{"unsigned", "moss.tx=3 moss.fallback=2", []string{"--pubkey", pub}, 2, []string{"not signed"}},
		{"signed", "moss.tx=1", []string{"--pubkey", pub}, 1, nil},
		{"malformed-tx", "moss.tx=abc moss.fallback=2", nil, 2, nil},
		{"malformed-tx-last-resort", "moss.tx=abc moss.fallback=9", nil, 3, []string{"does not exist"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, msgs, err := b.boot(t, c.cmdline, append([]string{"--dry-run"}, c.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, msgs)
			}
			if o.TX != c.want || !o.DryRun {
				t.Errorf("chose %d (dry run %v), want %d\n%s", o.TX, o.DryRun, c.want, msgs)
			}
			if len(o.Rejected) != len(c.rejected) {
				t.Fatalf("rejected %+v, want %q", o.Rejected, c.rejected)
			}
			for i, r := range c.rejected {
				if !strings.Contains(o.Rejected[i].Reason, r) || !strings.Contains(msgs, "cannot be booted") {
					t.Errorf("rejection %d %q lacks %q; console:\n%s", i, o.Rejected[i].Reason, r, msgs)
				}
			}
		})
	}

	t.Run("corrupt-image", func(t *testing.T) {
		p := filepath.Join(b.root, "images", b.images[2])
		orig, _ := os.ReadFile(p)
		bad := append([]byte(nil), orig...)
		bad[len(bad)/2] ^= 1
		os.WriteFile(p, bad, 0o644)
		defer os.WriteFile(p, orig, 0o644)
		o, _, err := b.boot(t, "moss.tx=2 moss.fallback=1", "--dry-run")
		if err != nil || o.TX != 1 || len(o.Rejected) != 1 || !strings.Contains(o.Rejected[0].Reason, "corrupt") {
			t.Errorf("%+v %v", o, err)
		}
	})
	t.Run("nothing-usable", func(t *testing.T) {
		_, msgs, err := b.boot(t, "moss.tx=7 moss.fallback=8", "--dry-run")
		if err == nil || !strings.Contains(err.Error(), "no usable transaction") || !strings.Contains(msgs, "no fallback left") {
			t.Errorf("%v\n%s", err, msgs)
		}
	})
}

func TestBootMountsUsr(t *testing.T) {
	testenv.RequireMountNS(t)
	b := newBootState(t)
	usr := filepath.Join(filepath.Dir(b.root), "usr")
	for _, d := range []string{usr, filepath.Join(filepath.Dir(b.root), "etc")} {
		os.MkdirAll(d, 0o755)
	}
	o, msgs, err := b.boot(t, "moss.tx=9 moss.fallback=2")
	if err != nil {
		t.Fatalf("%v\n%s", err, msgs)
	}
	defer unix.Unmount(usr, unix.MNT_DETACH)
	data, err := os.ReadFile(filepath.Join(usr, "release"))
	if err != nil || !strings.HasPrefix(string(data), "release 2\n") {
		t.Errorf("/usr/release: %q %v", data[:min(len(data), 12)], err)
	}
	if o.TX != 2 || o.Mount == nil || o.Target != usr {
		t.Errorf("outcome %+v", o)
	}
	if !strings.Contains(msgs, "mounted transaction 2 (fallback)") {
		t.Errorf("console:\n%s", msgs)
	}
	// The state root says what runs: a record of /usr (as seen after
	// switch_root) from this boot, and 2 as the active transaction.
	rec, ok, err := mountrec.Get(b.root, "/usr")
	if err != nil || !ok || rec.Tx != 2 || rec.BootID == "" || rec.BootID != mountrec.BootID() || rec.Stale() {
		t.Errorf("mount record %+v %v %v", rec, ok, err)
	}
	if a, err := readActive(b.root); err != nil || a != 2 {
		t.Errorf("active %d %v, want 2", a, err)
	}
}
