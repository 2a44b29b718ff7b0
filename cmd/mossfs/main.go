// Command mossfs is the run side of mossfs: it mounts transactions (kernel
// EROFS + overlayfs, or FUSE), switches them live, reports status, unmounts,
// and selects the transaction to boot from an initramfs.
//
// Each subcommand lives in its own file and registers itself with rootCmd in
// an init function.
package main

import (
	"fmt"
	"os"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "mossfs",
	Short:         "Mount, switch and boot mossfs transactions",
	Version:       cli.VersionString(),
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "fuse-serve" {
		// The FUSE daemon serves reads for as long as the mount lives:
		// the kernel's default slice (a mount command starts it with
		// StartUnboosted, so it has it already unless run by hand).
		cli.SetSched(cli.Sched{})
	} else {
		// Every other command is short, and a switch or a mount blocks
		// and wakes often: see cli.ShortSlice. A switch, which the
		// update that runs it waits on, also gets a larger share of busy
		// CPUs: see cli.SwitchBoost.
		s := cli.Sched{Slice: cli.ShortSlice}
		if c, _, err := rootCmd.Find(os.Args[1:]); err == nil && (c == switchCmd || c == rollbackCmd) {
			s.Boost = cli.SwitchBoost
		}
		cli.SetSched(s)
	}
	cli.SkipCompletionCommand(rootCmd, os.Args[1:])
	stopProfile := cli.Profile()
	err := rootCmd.Execute()
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mossfs:", err)
		os.Exit(1)
	}
}
