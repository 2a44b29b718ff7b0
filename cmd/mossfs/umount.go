package main

import (
	"errors"
	"fmt"

	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var umountFlags struct {
	root string
	lazy bool
}

var umountCmd = &cobra.Command{
	Use:   "umount [flags] TARGET",
	Short: "Unmount a mossfs mount",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		f := umountFlags
		target, err := absTarget(args[0])
		if err != nil {
			return err
		}
		unlock, err := mountrec.Lock(f.root)
		if err != nil {
			return err
		}
		defer unlock()
		cur, mounted, err := currentMount(target)
		if err != nil {
			return err
		}
		if !mounted {
			if err := mountrec.Remove(f.root, target); err != nil {
				return err
			}
			return fmt.Errorf("umount %s: nothing is mounted there", target)
		}
		if !isMossfsMount(cur) {
			return fmt.Errorf("umount %s: the mount there (%s %s) is not a mossfs mount", target, cur.FSType, cur.Source)
		}
		flags := unix.UMOUNT_NOFOLLOW
		if f.lazy {
			flags |= unix.MNT_DETACH
		}
		if err := unix.Unmount(target, flags); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("umount %s: busy (files open or processes inside); --lazy detaches it now and frees it when they let go", target)
			}
			return fmt.Errorf("umount %s: %w", target, err)
		}
		return mountrec.Remove(f.root, target)
	},
}

func init() {
	fl := umountCmd.Flags()
	fl.StringVar(&umountFlags.root, "root", defaultRoot, "state root")
	fl.BoolVar(&umountFlags.lazy, "lazy", false, "detach now even if busy (MNT_DETACH)")
	rootCmd.AddCommand(umountCmd)
}
