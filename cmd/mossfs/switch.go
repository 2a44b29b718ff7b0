package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var switchFlags struct {
	root, target, pubkey, driver, verity string
	blsDirs                              []string
	skipTriggers                         bool
}

var switchCmd = &cobra.Command{
	Use:   "switch [flags] TX",
	Short: "Switch the live system (/usr) to a transaction atomically",
	Long: `Switch TARGET (default /usr) to transaction TX and make it the active one.

The new tree is mounted detached and slid beneath the current mount, which is
then detached: programs that open files afterwards see the new transaction,
programs holding files open keep the old one until they let go. The boot
loader's default entry (BLS, see mossfs bls) becomes TX too. With
--pubkey the transaction's signature must verify first.

When TARGET is /usr, the system triggers of TX (usr/share/moss/triggers/sys.d)
run afterwards through moss-compose triggers run --scope sys, one line per
command; a failing trigger is a warning and does not undo the switch.
--skip-triggers leaves them out (mossfs-triggers.service then runs them at
the next boot).

The switch runs at a nice value 10 below the one it was started with (when it
may: root), so that busy CPUs delay it little; the triggers and a FUSE daemon
it starts run as it was started.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		f := switchFlags
		if !isDigits(args[0]) {
			if st, err := state.Open(f.root); err == nil {
				return st.NotATransaction("switch", args[0])
			}
			return fmt.Errorf("switch: %q is not a transaction id", args[0])
		}
		id, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil {
			return fmt.Errorf("switch: transaction id %q: %w", args[0], err)
		}
		return switchTo(cmd, f.root, id, f.target, f.pubkey, f.driver, f.verity, f.blsDirs, f.skipTriggers)
	},
}

func init() {
	fl := switchCmd.Flags()
	fl.StringVar(&switchFlags.root, "root", defaultRoot, "state root")
	fl.StringVar(&switchFlags.target, "target", "/usr", "mount point to switch")
	fl.StringVar(&switchFlags.pubkey, "pubkey", "", "require a valid signature by this Ed25519 public key (PEM)")
	fl.StringVar(&switchFlags.driver, "driver", "auto", "auto, overlay or fuse")
	fl.StringVar(&switchFlags.verity, "verity", "auto", "require, on, off or auto")
	fl.StringSliceVar(&switchFlags.blsDirs, "bls-dir", nil, "BLS entries directory whose default entry becomes TX (default: the standard ones under / that hold mossfs entries)")
	fl.BoolVar(&switchFlags.skipTriggers, "skip-triggers", false, "do not run the system triggers of TX")
	addFUSEPassthroughFlag(switchCmd)
	rootCmd.AddCommand(switchCmd)
}

// previousActivePath holds the transaction that was active before the last
// switch, for rollback when the active one records no parent.
func previousActivePath(root string) string {
	return filepath.Join(mountrec.Dir(root), ".previous-active")
}

// switchTo mounts transaction id at target (replacing what mossfs mounted
// there), records the mount and makes id the active transaction; the
// previously active one is remembered for rollback.
//
// The boot loader's default entry follows (see bootDefaultFiles), so that a
// reboot starts the transaction now running instead of silently going back.
func switchTo(cmd *cobra.Command, root string, id uint64, target, pubkey, driver, verity string, blsDirs []string, skipTriggers bool) error {
	unlock, err := mountrec.Lock(root)
	if err != nil {
		return err
	}
	defer unlock()
	// One open of the state root serves the whole switch; the upkeep of
	// Open is left to the commands that add to it.
	st, err := state.OpenExisting(root)
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	src, err := stateTransactionSource(st, id)
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	if pubkey != "" {
		pub, err := sign.LoadPublicKey(pubkey)
		if err != nil {
			return fmt.Errorf("switch: %w", err)
		}
		// The signature must cover the image file that is actually there,
		// not just the digest its metadata claims; the overlay then mounts
		// that same open file.
		f, err := os.Open(src.image)
		if err != nil {
			return fmt.Errorf("switch: %w", err)
		}
		defer f.Close()
		d, _, err := sign.ImageDigestFile(f)
		if err != nil {
			return fmt.Errorf("switch: transaction %d: %w", id, err)
		}
		if err := sign.VerifyTransaction(root, pub, id, d); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
		src.checked = f
		afterSignatureCheck(src.image)
	}
	t, err := absTarget(target)
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	prev, err := st.Active()
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	// What a switch records goes to disk in one batch of durable writes
	// (package durable): the active transaction (written by the state
	// package, under its lock), the previously active one, the boot
	// loader's default entry and the mount record. The batch begins before
	// the mount, so that the data fsyncs run while the new mount is built
	// and put in place; only then are the files renamed into place and
	// their directories synced (Commit). If the mount fails, nothing is
	// recorded (Abort).
	var files []durable.File
	if prev != 0 && prev != id {
		files = append(files, durable.File{Path: previousActivePath(root), Data: []byte(strconv.FormatUint(prev, 10) + "\n"), Perm: 0o644, Swap: true})
	}
	dirs, bootFiles, bootErr := bootDefaultFiles(id, blsDirs)
	if bootErr == nil {
		files = append(files, bootFiles...)
	}
	// The mount record joins the batch before the mount too, as the mount
	// will most likely be made: as the last one at this target was (its
	// record says how). A mount that comes out otherwise adds its record
	// again, which then replaces the guess.
	guess := mountrec.Record{Target: t, Tx: src.tx, Image: src.digest, ImagePath: src.image, Objects: src.objects, Time: time.Now().UTC(), BootID: mountrec.BootID()}
	var guessed bool
	if d, v, m, ok := mountrec.Peek(root, t); ok && (driver == "auto" || driver == d) {
		guess.Driver, guess.Verity, guess.Method = d, v, m
		if f, err := mountrec.File(root, guess); err == nil {
			files, guessed = append(files, f), true
		}
	}
	upd, err := st.BeginSetActive(id, files...)
	if err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	rec, err := mountOnly(src, t, driver, verity)
	if err != nil {
		upd.Abort()
		return fmt.Errorf("switch: %w", err)
	}
	rec.Time, rec.BootID = guess.Time, guess.BootID
	if !guessed || rec != guess {
		recFile, err := mountrec.File(root, rec)
		if err != nil {
			upd.Abort()
			return fmt.Errorf("switch: mounted, but recording the mount failed: %w", err)
		}
		upd.Add(recFile)
	}
	if err := upd.Commit(); err != nil {
		// The mount is there: keep at least its record, which protects the
		// transaction from removal.
		if rerr := mountrec.Write(root, rec); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("switch: mounted, but recording the active transaction failed: %w", err)
	}
	// What the switch says goes out in one write: each write to a pipe
	// wakes its reader (the parent waiting for the switch), and on busy
	// cores each wake-up waits for a time slice, as the switch does.
	var out bytes.Buffer
	fmt.Fprintf(&out, "switched %s to transaction %d (%s, verity %s)\n", t, id, rec.Driver, orDash(rec.Verity))
	if bootErr == nil {
		for _, d := range dirs {
			fmt.Fprintf(&out, "boot default in %s: transaction %d\n", d, id)
		}
	}
	// id is live: its system triggers run even if the boot entry could not
	// follow.
	if !skipTriggers {
		runSysTriggers(cmd, &out, root, id, t)
	}
	cmd.ErrOrStderr().Write(out.Bytes())
	if bootErr != nil {
		return fmt.Errorf("switch: switched to transaction %d, but the next boot would not start it: %w", id, bootErr)
	}
	return nil
}

// runSysTriggers runs the system triggers of transaction id, now live at
// target, through moss-compose (the trigger engine stays out of mossfs,
// which goes into the initramfs). They run on the host as their files
// say, with paths under /usr, so only when /usr itself was switched.
// Nothing here fails the switch: it is done, and a failing trigger is a
// warning, as in moss.
//
// out holds what the switch has to say so far: a line is added to it, or,
// before the triggers run, it is written out (and emptied) ahead of theirs.
func runSysTriggers(cmd *cobra.Command, out *bytes.Buffer, root string, id uint64, target string) {
	if target != "/usr" {
		fmt.Fprintf(out, "system triggers not run: they run only when /usr is switched (target %s)\n", target)
		return
	}
	log := cmd.ErrOrStderr()
	log.Write(out.Bytes())
	out.Reset()
	mc, err := cli.Sibling("moss-compose")
	if err != nil {
		fmt.Fprintf(log, "warning: system triggers of transaction %d not run: %v\n", id, err)
		return
	}
	// The triggers' commands run as the switch was started (nice value,
	// default time slice), not boosted as the switch is (it is done by now).
	cli.SetSched(cli.Sched{})
	c := exec.Command(mc, "triggers", "run", "--scope", "sys", "--root", root, "--usr", target, "--tx", strconv.FormatUint(id, 10))
	c.Stdout, c.Stderr = log, log
	if err := c.Run(); err != nil {
		fmt.Fprintf(log, "warning: system triggers of transaction %d: %s: %v\n", id, mc, err)
	}
}

// afterSignatureCheck runs between a switch's signature check and its mount:
// tests replace the image file there to show that the checked file is the
// one mounted.
var afterSignatureCheck = func(image string) {}

// bootDefaultFiles prepares making transaction id the default boot entry
// in dirs, or, with none given, in every standard entries directory under /
// that holds mossfs entries (none is not an error: the system may not boot
// via BLS). It returns the directories and their loader.conf files, for the
// caller's batch of durable writes. A user who is not root (a rootless
// FUSE switch) changes no boot entries unless given --bls-dir: the boot
// loader's configuration is not theirs.
func bootDefaultFiles(id uint64, dirs []string) ([]string, []durable.File, error) {
	if len(dirs) == 0 {
		if os.Geteuid() != 0 {
			return nil, nil, nil
		}
		return bls.DefaultFilesFound("/", id)
	}
	var files []durable.File
	for _, d := range dirs {
		f, err := bls.DefaultFile(d, id)
		if err != nil {
			return dirs, nil, err
		}
		files = append(files, f)
	}
	return dirs, files, nil
}
