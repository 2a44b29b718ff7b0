package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/overlay"
	"github.com/spf13/cobra"
)

var checkFlags struct {
	root string
	json bool
}

var checkCmd = &cobra.Command{
	Use:   "check [flags]",
	Short: "Probe the kernel and show which mossfs features work here",
	Long: `Probe the running kernel, as root, for what mossfs uses: the new mount API,
file-backed EROFS (else a loop device), overlayfs data-only lower layers,
lowerdir+ and detached layers, overlay verity, fs-verity on the state root's
filesystem, MOVE_MOUNT_BENEATH (live switches) and FUSE passthrough.
Nothing is left mounted: probes that must attach a mount run in a private
mount namespace.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if os.Geteuid() != 0 {
			return fmt.Errorf("check: needs root (it creates mounts to probe the kernel)")
		}
		dir := checkFlags.root
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = os.TempDir()
		}
		rep := overlay.Probe(dir)
		if checkFlags.json {
			return cli.PrintJSON(cmd.OutOrStdout(), rep)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "kernel %s, probed in %s\n", rep.Kernel, rep.Dir)
		for _, f := range rep.Features {
			mark := "yes"
			if !f.OK {
				mark = "no"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", f.Name, mark, f.Detail)
		}
		fmt.Fprintf(w, "mount driver:\t%s\n", driverVerdict(rep))
		return w.Flush()
	},
}

// driverVerdict sums up what `mossfs mount --driver auto` will do here.
func driverVerdict(rep overlay.Report) string {
	switch {
	case rep.Get(overlay.FeatDataOnlyLowers).OK && rep.Get(overlay.FeatMountBeneath).OK:
		return "overlay, switched live"
	case rep.Get(overlay.FeatDataOnlyLowers).OK:
		return "overlay (no live switch: MOVE_MOUNT_BENEATH is missing)"
	case rep.Get(overlay.FeatFUSE).OK:
		return "FUSE (overlayfs lacks data-only lower layers)"
	}
	return "none"
}

func init() {
	fl := checkCmd.Flags()
	fl.StringVar(&checkFlags.root, "root", defaultRoot, "state root (its filesystem is probed for file-backed EROFS and fs-verity)")
	fl.BoolVar(&checkFlags.json, "json", false, "print JSON")
	rootCmd.AddCommand(checkCmd)
}
