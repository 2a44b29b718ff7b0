package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/bootcmd"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var bootFlags struct {
	sysroot string
	root    string
	target  string
	cmdline string
	pubkey  string
	verity  string
	dryRun  bool
	json    bool
}

var bootCmd = &cobra.Command{
	Use:   "boot",
	Short: "From an initramfs: mount the transaction the kernel command line names at /sysroot/usr, with fallbacks",
	Long: `Run inside an initramfs before switch_root, with the root filesystem mounted at
--sysroot. Reads the kernel command line (--cmdline FILE for tests):

  moss.tx=<id>               transaction to boot (moss.fstx=<id> is accepted too;
                             without either, the state's active transaction)
  moss.digest=sha256:<hex>   pins the fs-verity digest of that transaction's image
  moss.fallback=<id>[,<id>…] transactions to try, in order, when it cannot be used

A transaction is used only if its metadata exists, its image is present and
hashes to the digest that names it (and to the pinned one), its signature
verifies (with --pubkey) and its overlay mounts; otherwise the next one is
tried and the reason is printed on the console. Objects are checked with
overlayfs verity=require whenever they carry fs-verity and the kernel can
check it (so a tampered object reads as EIO; that is not a reason to fall
back). /etc and /var stay on the root filesystem: only /usr is mounted.
System triggers are not run here (as moss's initrd skips them: /var may not
be mounted yet); mossfs-triggers.service runs them once the booted system
is up.`,
	Args: cobra.NoArgs,
	RunE: runBoot,
}

func init() {
	f := bootCmd.Flags()
	f.StringVar(&bootFlags.sysroot, "sysroot", "/sysroot", "where the root filesystem is mounted")
	f.StringVar(&bootFlags.root, "root", "", "state root (default <sysroot>/.moss)")
	f.StringVar(&bootFlags.target, "target", "", "where to mount the transaction (default <sysroot>/usr)")
	f.StringVar(&bootFlags.cmdline, "cmdline", "/proc/cmdline", "file holding the kernel command line")
	f.StringVar(&bootFlags.pubkey, "pubkey", "", "Ed25519 public key (PEM): boot only transactions signed with it")
	f.StringVar(&bootFlags.verity, "verity", "auto", "object verification: auto (require when possible), require, on or off")
	f.BoolVar(&bootFlags.dryRun, "dry-run", false, "check and choose, but do not mount")
	f.BoolVar(&bootFlags.json, "json", false, "print the outcome as JSON on stdout")
	rootCmd.AddCommand(bootCmd)
}

// bootOutcome is what mossfs boot reports (--json).
type bootOutcome struct {
	TX        uint64          `json:"tx"`
	Role      string          `json:"role"`
	Image     string          `json:"image"`
	Target    string          `json:"target"`
	Mount     *overlay.Info   `json:"mount,omitempty"`
	Verified  bool            `json:"signature_verified"`
	Pinned    bool            `json:"digest_pinned"`
	Rejected  []bootRejection `json:"rejected"`
	Problems  []string        `json:"cmdline_problems,omitempty"`
	DryRun    bool            `json:"dry_run,omitempty"`
	Measured  bool            `json:"image_digest_measured"`
	Fallbacks []uint64        `json:"fallbacks"`
}

type bootRejection struct {
	TX     uint64 `json:"tx"`
	Role   string `json:"role"`
	Reason string `json:"reason"`
}

func runBoot(cmd *cobra.Command, args []string) error {
	fl := bootFlags
	// Messages go to stderr, which in an initramfs is the console.
	bootLog := func(format string, a ...any) {
		fmt.Fprintf(cmd.ErrOrStderr(), "mossfs boot: "+format+"\n", a...)
	}
	if fl.root == "" {
		fl.root = filepath.Join(fl.sysroot, strings.TrimPrefix(state.DefaultRoot, "/"))
	}
	if fl.target == "" {
		fl.target = filepath.Join(fl.sysroot, "usr")
	}
	verity, err := overlay.ParseVerity(fl.verity)
	if err != nil {
		return fmt.Errorf("boot: --verity: %w", err)
	}
	raw, err := os.ReadFile(fl.cmdline)
	if err != nil {
		return fmt.Errorf("boot: kernel command line: %w", err)
	}
	params := bootcmd.Parse(string(raw))
	for _, p := range params.Problems {
		bootLog("ignoring malformed parameter %s", p)
	}
	var pub ed25519.PublicKey
	if fl.pubkey != "" {
		if pub, err = sign.LoadPublicKey(fl.pubkey); err != nil {
			return fmt.Errorf("boot: %w", err)
		}
	}
	st, err := state.Open(fl.root)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	active, err := st.Active()
	if err != nil {
		bootLog("%v", err)
	}
	cands := params.Candidates(active)
	if params.TX == 0 && active != 0 && !params.TXMalformed {
		bootLog("no moss.tx= on the command line: booting the active transaction %d", active)
	}
	out := bootOutcome{Target: fl.target, Problems: params.Problems, DryRun: fl.dryRun, Fallbacks: params.Fallback, Rejected: []bootRejection{}}
	try := func(c bootcmd.Candidate) error {
		tx, err := st.Get(c.ID)
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("transaction %d does not exist in %s", c.ID, fl.root)
		}
		if err != nil {
			return err
		}
		named, err := tx.ImageDigest()
		if err != nil {
			return err
		}
		img := st.ImagePath(tx)
		// Checked and mounted through one descriptor: replacing the file
		// between the check and the mount cannot substitute another image
		// (and an image with fs-verity cannot be changed in place).
		imgFile, err := os.Open(img)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		defer imgFile.Close()
		got, measured, err := sign.ImageDigestFile(imgFile)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if got != named {
			return fmt.Errorf("image %s is corrupt: its fs-verity digest is %s", img, hex.EncodeToString(got[:]))
		}
		if c.HasDigest && got != c.Digest {
			return fmt.Errorf("image sha256:%s does not match the pinned moss.digest=sha256:%s", tx.Image, hex.EncodeToString(c.Digest[:]))
		}
		if pub != nil {
			if err := sign.VerifyTransaction(st.Root(), pub, c.ID, got); err != nil {
				return err
			}
		}
		out.TX, out.Role, out.Image, out.Measured = c.ID, c.Role, "sha256:"+tx.Image, measured
		out.Pinned, out.Verified = c.HasDigest, pub != nil
		if fl.dryRun {
			return nil
		}
		tmp := "/run" // exists in every initramfs; /tmp may not
		if _, err := os.Stat(tmp); err != nil {
			tmp = ""
		}
		objects := st.Store().ObjectsDir()
		want := verity
		if want == overlay.VerityAuto && (c.HasDigest || pub != nil) {
			// A pinned or signed image is trusted, and so are the digests it
			// names: require them whenever the kernel can check them, not
			// only when the objects look verity-enabled (an object with its
			// verity stripped must read as EIO, not silently unchecked).
			want = pinnedVerity(objects, bootLog)
		}
		mountImg := img
		if p := fmt.Sprintf("/proc/self/fd/%d", imgFile.Fd()); fileIs(p, imgFile) {
			mountImg = p
		}
		fd, info, err := overlay.Mount(overlay.Options{Image: mountImg, ObjectsDir: objects, Verity: want, TempDir: tmp})
		if err != nil && want == overlay.VerityRequire && verity == overlay.VerityAuto && strings.Contains(err.Error(), "no verity option") {
			bootLog("overlayfs cannot check fs-verity digests (Linux 6.6+ needed): mounting without object verification")
			fd, info, err = overlay.Mount(overlay.Options{Image: mountImg, ObjectsDir: objects, Verity: overlay.VerityOff, TempDir: tmp})
		}
		if err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		defer unix.Close(fd)
		if err := os.MkdirAll(fl.target, 0o755); err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		if _, err := mounttuck.Switch(fd, fl.target); err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		out.Mount = &info
		recordBoot(st, fl.root, fl.sysroot, fl.target, tx, active, info, img, objects, bootLog)
		return nil
	}
	chosen, failed, err := bootcmd.Select(cands, try, func(s string) { bootLog("%s", s) })
	for _, a := range failed {
		out.Rejected = append(out.Rejected, bootRejection{TX: a.Candidate.ID, Role: a.Candidate.Role, Reason: a.Err.Error()})
	}
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	how := "mounted"
	if fl.dryRun {
		how = "would mount"
	}
	detail := ""
	if out.Mount != nil {
		detail = fmt.Sprintf(" (%s, image %s-backed, verity=%s)", out.Mount.Method, out.Mount.ImageBacking, out.Mount.Verity)
		if (out.Pinned || out.Verified) && out.Mount.Verity != overlay.VerityRequire {
			bootLog("warning: the image is pinned/signed but object content is not verified (objects without fs-verity, or a kernel that cannot check it)")
		}
	}
	bootLog("%s transaction %d (%s) image %s at %s%s", how, chosen.ID, chosen.Role, out.Image, fl.target, detail)
	if fl.json {
		return cli.PrintJSON(cmd.OutOrStdout(), out)
	}
	return nil
}

// fileIs reports whether path names the same file as f (it is false for
// /proc/self/fd/N when /proc is not mounted).
func fileIs(path string, f *os.File) bool {
	a, err1 := os.Stat(path)
	b, err2 := f.Stat()
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// recordBoot makes the state root describe what boot mounted, as mossfs
// mount and switch do: a mount record for the target as it will be seen
// after switch_root (with this boot's id, so that it goes stale at the next
// boot) and, if boot chose another one (a fallback, or moss.tx naming a
// transaction that was not active), tx as the active transaction. Both are
// best effort: a root file system mounted read-only in the initramfs only
// costs a message, never the boot.
func recordBoot(st *state.State, root, sysroot, target string, tx *state.Transaction, active uint64, info overlay.Info, img, objects string, bootLog func(string, ...any)) {
	after := func(p string) string {
		if rel, err := filepath.Rel(sysroot, p); err == nil && filepath.IsLocal(rel) {
			return "/" + rel
		}
		return p
	}
	rec := mountrec.Record{Target: after(target), Tx: tx.ID, Image: tx.Image, ImagePath: after(img), Objects: after(objects),
		Driver: "overlay", Verity: string(info.Verity), Method: string(info.Method)}
	if err := mountrec.Write(root, rec); err != nil {
		bootLog("note: cannot record the mount in %s (%v); mossfs status will not name it", root, err)
	}
	if tx.ID != active {
		if err := st.SetActive(tx.ID); err != nil {
			bootLog("note: cannot record transaction %d as the active one (%v)", tx.ID, err)
		}
	}
}

// pinnedVerity is the object policy for a pinned or signed image: require
// when the object store's filesystem has fs-verity (an object measures, or
// reports it has none enabled), off when the kernel or filesystem lacks it.
func pinnedVerity(objects string, bootLog func(string, ...any)) overlay.Verity {
	fans, _ := os.ReadDir(objects)
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(objects, fan.Name()))
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			f, err := os.Open(filepath.Join(objects, fan.Name(), e.Name()))
			if err != nil {
				continue
			}
			_, err = fsverity.Measure(int(f.Fd()))
			f.Close()
			if err == nil || errors.Is(err, fsverity.ErrNotEnabled) {
				if err != nil {
					bootLog("warning: object %s has no fs-verity; objects without it will read as EIO (verity=require)", e.Name())
				}
				return overlay.VerityRequire
			}
			bootLog("warning: no fs-verity on %s (%v): object content is not verified", objects, err)
			return overlay.VerityOff
		}
	}
	return overlay.VerityRequire
}
