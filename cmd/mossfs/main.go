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
		// The FUSE daemon serves reads for as long as the mount lives,
		// and is started by a mount command that runs with the short slice.
		cli.SetSlice(0)
	} else {
		// Every other command is short, and a switch or a mount blocks
		// and wakes often: see cli.ShortSlice.
		cli.SetSlice(cli.ShortSlice)
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
