package main

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/spf13/cobra"
)

var statusFlags struct {
	root string
	json bool
}

// mountStatus is one mossfs mount (or a record of one) in `mossfs status`.
type mountStatus struct {
	Target string `json:"target"`
	// Mounted: the kernel has a mossfs mount there. Recorded: the state
	// root has a record for it. A record without a mount is stale.
	Mounted  bool `json:"mounted"`
	Recorded bool `json:"recorded"`
	// EarlierBoot: the record was written during an earlier boot (its
	// mount is gone; whatever is mounted there now is another one).
	EarlierBoot bool   `json:"earlier_boot,omitempty"`
	Driver      string `json:"driver,omitempty"`
	FSType      string `json:"fstype,omitempty"`
	Tx          uint64 `json:"tx,omitempty"`
	Image       string `json:"image,omitempty"`
	Verity      string `json:"verity,omitempty"`
	Method      string `json:"method,omitempty"`
	// Stacked counts the mounts at the target (1 unless a switch failed half-way).
	Stacked int `json:"stacked,omitempty"`
}

type statusReport struct {
	Root   string        `json:"root"`
	Active uint64        `json:"active"`
	Mounts []mountStatus `json:"mounts"`
	// SysTriggers is the last run of system triggers (nil: none, or the
	// record is private to the store's owner).
	SysTriggers *state.SysTriggerRun `json:"system_triggers,omitempty"`
}

var statusCmd = &cobra.Command{
	Use:   "status [flags]",
	Short: "Show which transactions are mounted where",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		rep, err := collectStatus(statusFlags.root)
		if err != nil {
			return err
		}
		if statusFlags.json {
			return cli.PrintJSON(cmd.OutOrStdout(), rep)
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "active transaction: %s\n", txLabel(rep.Active))
		if r := rep.SysTriggers; r != nil {
			n := 0
			for _, tr := range r.Triggers {
				n += len(tr.Commands)
			}
			fmt.Fprintf(w, "system triggers: ran for transaction %d at %s, %d of %d commands failed\n", r.Tx, r.Finished.Local().Format(time.DateTime), r.Failed(), n)
		}
		fmt.Fprintln(w, "TARGET\tTX\tDRIVER\tVERITY\tIMAGE\tSTATE")
		for _, m := range rep.Mounts {
			state := "mounted"
			switch {
			case m.EarlierBoot:
				state = "stale record (earlier boot)"
			case !m.Mounted:
				state = "stale record (not mounted)"
			case !m.Recorded:
				state = "mounted (no record)"
			case m.Stacked > 1:
				state = fmt.Sprintf("mounted, %d stacked", m.Stacked)
			}
			img := m.Image
			if len(img) > 16 {
				img = img[:16] + "…"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Target, txLabel(m.Tx), orDash(m.Driver), orDash(m.Verity), orDash(img), state)
		}
		return w.Flush()
	},
}

func txLabel(id uint64) string {
	if id == 0 {
		return "-"
	}
	return fmt.Sprint(id)
}

func init() {
	fl := statusCmd.Flags()
	fl.StringVar(&statusFlags.root, "root", defaultRoot, "state root")
	fl.BoolVar(&statusFlags.json, "json", false, "print JSON")
	rootCmd.AddCommand(statusCmd)
}

// collectStatus joins the kernel's mossfs mounts with the state root's records.
func collectStatus(root string) (statusReport, error) {
	rep := statusReport{Root: root, Mounts: []mountStatus{}}
	active, err := readActive(root)
	if err != nil {
		return rep, err
	}
	rep.Active = active
	if rep.SysTriggers, err = state.ReadSysTriggers(root); err != nil && !errors.Is(err, fs.ErrPermission) {
		return rep, err
	}
	recs, err := mountrec.List(root)
	if errors.Is(err, fs.ErrPermission) {
		// Mount records are private to the store's owner: others see
		// the kernel's mounts only.
		recs, err = nil, nil
	}
	if err != nil {
		return rep, err
	}
	mounts, err := mounttuck.ReadMountInfo()
	if err != nil {
		return rep, err
	}
	byTarget := map[string]*mountStatus{}
	for _, m := range mounts {
		if !isMossfsMount(m) {
			continue
		}
		s := byTarget[m.MountPoint]
		if s == nil {
			s = &mountStatus{Target: m.MountPoint, Mounted: true, FSType: m.FSType, Driver: "overlay"}
			if m.FSType != "overlay" {
				s.Driver = "fuse"
			}
			byTarget[m.MountPoint] = s
		}
		s.Stacked++
	}
	for _, r := range recs {
		if r.Stale() {
			rep.Mounts = append(rep.Mounts, mountStatus{Target: r.Target, Recorded: true, EarlierBoot: true,
				Tx: r.Tx, Image: r.Image, Verity: r.Verity, Method: r.Method, Driver: r.Driver})
			continue
		}
		s := byTarget[r.Target]
		if s == nil {
			s = &mountStatus{Target: r.Target}
			byTarget[r.Target] = s
		}
		s.Recorded = true
		s.Tx, s.Image, s.Verity, s.Method = r.Tx, r.Image, r.Verity, r.Method
		if s.Driver == "" {
			s.Driver = r.Driver
		}
	}
	for _, s := range byTarget {
		rep.Mounts = append(rep.Mounts, *s)
	}
	sort.Slice(rep.Mounts, func(i, j int) bool { return rep.Mounts[i].Target < rep.Mounts[j].Target })
	return rep, nil
}
