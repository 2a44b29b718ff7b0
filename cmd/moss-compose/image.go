package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/spf13/cobra"
)

// image: container images live in moss-oci, the one program that links
// containers/image (linking it here would add ~10 ms to every start of
// moss-compose and of mkcomposefs). "moss-compose image ARGS" runs
// "moss-oci image ARGS" in its place.

var imageCmd = &cobra.Command{
	Use:                "image",
	Short:              "Pull, list, inspect and remove container images (runs moss-oci image)",
	DisableFlagParsing: true,
	RunE: func(cmd *cobra.Command, args []string) error {
		return execMossOCI("image", args)
	},
}

// execMossOCI replaces this process by "moss-oci SUBCOMMAND ARGS".
func execMossOCI(sub string, args []string) error {
	bin, err := mossOCIPath()
	if err != nil {
		return err
	}
	argv := append([]string{bin, sub}, args...)
	// A CPU profile's timer (MOSSFS_CPUPROFILE) survives exec, and its
	// SIGPROF would kill moss-oci before the Go runtime handles it: stop it
	// here; moss-oci writes its own profile to the same file.
	pprof.StopCPUProfile()
	if err := syscall.Exec(bin, argv, os.Environ()); err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	return nil
}

// mossOCIPath finds moss-oci beside this executable, else on $PATH.
func mossOCIPath() (string, error) {
	p, err := cli.Sibling("moss-oci")
	if err != nil {
		return "", fmt.Errorf("container images are handled by moss-oci: %w", err)
	}
	return p, nil
}

func init() { rootCmd.AddCommand(imageCmd) }
