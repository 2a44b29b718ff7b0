// Command moss-compose is the build side of mossfs: it imports content into
// the store (directories, .stone packages, composefs dumps), composes
// transactions into EROFS metadata images, inspects, verifies and collects
// garbage. Invoked as "mkcomposefs" it behaves like composefs's mkcomposefs.
//
// Each subcommand lives in its own file and registers itself with rootCmd in
// an init function.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/sandbox"
	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "moss-compose",
	Short:         "Build and manage mossfs transactions: content store, EROFS metadata images, state",
	Version:       cli.VersionString(),
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	// The container init of transaction triggers is this program, re-executed.
	sandbox.Init()
	// Multi-call: a link named mkcomposefs runs the mkcomposefs subcommand.
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "mkcomposefs" {
		args = append([]string{"mkcomposefs"}, args...)
		rootCmd.SetArgs(args)
	}
	cli.SkipCompletionCommand(rootCmd, args)
	stopProfile := cli.Profile()
	err := rootCmd.Execute()
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "moss-compose:", err)
		os.Exit(1)
	}
}
