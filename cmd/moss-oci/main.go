// Command moss-oci is the container side of mossfs: it pulls OCI images into
// the store and lists, inspects and removes them, and exports transactions
// as images. It is the only program that links containers/image (package
// oci), and the one that links SQLite (modernc.org/sqlite), to read moss's
// databases for adopt; moss-compose hands its "image", "export" and
// "adopt" subcommands to it, so that moss-compose's start-up stays small.
package main

import (
	"fmt"
	"os"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/sandbox"
	"github.com/mossfs/mossfs/oci"
	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "moss-oci",
	Short:         "Pull OCI container images into the mossfs store and manage them",
	Version:       cli.VersionString(),
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	// The container init of transaction triggers (adopt runs them) is
	// this program, re-executed.
	sandbox.Init()
	// containers/storage re-executes this binary to apply layers (export
	// to containers-storage:): that child must stop here.
	if oci.ReexecInit() {
		return
	}
	stopProfile := cli.Profile()
	err := rootCmd.Execute()
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "moss-oci:", err)
		os.Exit(1)
	}
}
