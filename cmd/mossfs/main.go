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
	cli.SkipCompletionCommand(rootCmd, os.Args[1:])
	stopProfile := cli.Profile()
	err := rootCmd.Execute()
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mossfs:", err)
		os.Exit(1)
	}
}
