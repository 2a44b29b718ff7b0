package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/tree"
	"github.com/spf13/cobra"
)

// The state subcommands: list, show, diff, remove, prune, verify.

var stateFlags struct {
	root   string
	json   bool
	force  bool
	noGC   bool
	dryRun bool
	keep   int
	owner  string
	files  bool
	quiet  bool
	noQuar bool
}

func addStateFlags(c *cobra.Command) {
	c.Flags().StringVar(&stateFlags.root, "root", state.DefaultRoot, "state root")
	c.Flags().BoolVar(&stateFlags.json, "json", false, "print the result as JSON")
	stateCmd.AddCommand(c)
}

// txEntry is a transaction as listed: metadata plus its status.
type txEntry struct {
	*state.Transaction
	Active  bool     `json:"active"`
	Mounted []string `json:"mounted,omitempty"`
}

func statusOf(s *state.State) (uint64, map[uint64][]string, error) {
	active, err := s.Active()
	if err != nil {
		return 0, nil, err
	}
	mounts, err := s.Mounts()
	if errors.Is(err, fs.ErrPermission) {
		// Mount records are private to the store's owner; others see
		// the transactions without them.
		mounts, err = nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	mounted := map[uint64][]string{}
	for _, m := range mounts {
		t := m.Target
		if t == "" {
			t = m.Name
		}
		mounted[m.Tx] = append(mounted[m.Tx], t)
	}
	return active, mounted, nil
}

var stateListCmd = &cobra.Command{
	Use:   "list",
	Short: "List transactions",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		s, err := state.OpenRecords(stateFlags.root)
		if err != nil {
			return err
		}
		txs, err := s.List()
		if err != nil {
			return err
		}
		active, mounted, err := statusOf(s)
		if err != nil {
			return err
		}
		entries := []txEntry{}
		for _, tx := range txs {
			entries = append(entries, txEntry{Transaction: tx, Active: tx.ID == active, Mounted: mounted[tx.ID]})
		}
		if stateFlags.json {
			return cli.PrintJSON(os.Stdout, entries)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tPARENT\tTIME\tENTRIES\tOBJECTS\tIMAGE\tINPUTS\tSTATUS")
		for _, e := range entries {
			parent := "-"
			if e.Parent != 0 {
				parent = strconv.FormatUint(e.Parent, 10)
			}
			var status []string
			if e.Active {
				status = append(status, "active")
			}
			for _, m := range e.Mounted {
				status = append(status, "mounted at "+m)
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", e.ID, parent, e.Time.Local().Format(time.DateTime),
				e.Counts.Entries, e.Counts.Objects, e.Image[:12], inputSummary(e.Inputs), strings.Join(status, ", "))
		}
		return w.Flush()
	},
}

func inputSummary(ins []state.Input) string {
	var parts []string
	for i, in := range ins {
		if i == 4 {
			parts = append(parts, fmt.Sprintf("… (%d)", len(ins)))
			break
		}
		parts = append(parts, in.Label())
	}
	return strings.Join(parts, ", ")
}

func parseOneID(arg string) (uint64, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad transaction id %q", arg)
	}
	return id, nil
}

var stateShowCmd = &cobra.Command{
	Use:   "show TX",
	Short: "Show a transaction: image, counts, inputs; --owner PATH tells which inputs provide a path",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		id, err := parseOneID(args[0])
		if err != nil {
			return err
		}
		s, err := state.Open(stateFlags.root)
		if err != nil {
			return err
		}
		tx, err := s.Get(id)
		if err != nil {
			return err
		}
		if stateFlags.owner != "" {
			owners, err := s.Owners(tx, stateFlags.owner)
			if err != nil {
				return err
			}
			if stateFlags.json {
				return cli.PrintJSON(os.Stdout, map[string]any{"path": stateFlags.owner, "owners": owners})
			}
			if len(owners) == 0 {
				return fmt.Errorf("transaction %d: no input provides %s", id, stateFlags.owner)
			}
			for _, in := range owners {
				fmt.Println(in.Label())
			}
			return nil
		}
		active, mounted, err := statusOf(s)
		if err != nil {
			return err
		}
		e := txEntry{Transaction: tx, Active: tx.ID == active, Mounted: mounted[tx.ID]}
		if stateFlags.files {
			root, err := s.Tree(tx)
			if err != nil {
				return err
			}
			var paths []string
			root.Walk(func(n *tree.Node) error {
				if n.Parent != nil {
					paths = append(paths, n.Path())
				}
				return nil
			})
			if stateFlags.json {
				return cli.PrintJSON(os.Stdout, map[string]any{"transaction": e, "files": paths})
			}
			for _, p := range paths {
				fmt.Println(p)
			}
			return nil
		}
		if stateFlags.json {
			return cli.PrintJSON(os.Stdout, e)
		}
		fmt.Printf("transaction %d\n", tx.ID)
		if tx.Parent != 0 {
			fmt.Printf("  parent:   %d\n", tx.Parent)
		}
		fmt.Printf("  time:     %s\n", tx.Time.Local().Format(time.RFC3339))
		fmt.Printf("  image:    sha256:%s\n            %s (%s)\n", tx.Image, s.ImagePath(tx), humanBytes(uint64(tx.Counts.Image)))
		c := tx.Counts
		fmt.Printf("  entries:  %d (%d dirs, %d files, %d symlinks, %d other)\n", c.Entries, c.Dirs, c.Files, c.Symlinks, c.Other)
		fmt.Printf("  content:  %s in %d objects\n", humanBytes(c.Bytes), c.Objects)
		if e.Active {
			fmt.Println("  status:   active")
		}
		for _, m := range e.Mounted {
			fmt.Printf("  mounted:  %s\n", m)
		}
		fmt.Printf("  inputs:   %d\n", len(tx.Inputs))
		for _, in := range tx.Inputs {
			fmt.Printf("    %s (%d entries, %s)\n", in.Label(), in.Entries, humanBytes(in.Bytes))
		}
		if len(tx.Triggers) > 0 {
			fmt.Printf("  triggers: %d\n", len(tx.Triggers))
			for _, r := range tx.Triggers {
				how := "ran"
				if !r.Ran {
					how = "carried over from the parent (inputs unchanged)"
				}
				fmt.Printf("    %s: %s, %d paths written, %d removed\n", r.Name, how, len(r.Paths), len(r.Removed))
				for _, p := range r.Paths {
					fmt.Printf("      + %s\n", p)
				}
				for _, p := range r.Removed {
					fmt.Printf("      - %s\n", p)
				}
			}
		}
		return nil
	},
}

var stateDiffCmd = &cobra.Command{
	Use:   "diff A B",
	Short: "List packages and files added, removed and changed from transaction A to B",
	Long: `Diff compares two transactions' inputs (packages and trees added, removed,
changed) and their images path by path. Human output shows paths under /usr,
where the image is mounted; --json gives paths relative to the image root.`,
	Args: cobra.ExactArgs(2),
	RunE: func(cmd *cobra.Command, args []string) error {
		a, err := parseOneID(args[0])
		if err != nil {
			return err
		}
		b, err := parseOneID(args[1])
		if err != nil {
			return err
		}
		s, err := state.Open(stateFlags.root)
		if err != nil {
			return err
		}
		d, err := s.DiffTx(a, b)
		if err != nil {
			return err
		}
		if stateFlags.json {
			return cli.PrintJSON(os.Stdout, d)
		}
		label := func(c state.InputChange) string {
			in := state.Input{Kind: c.Kind, Name: c.Name, Prefix: c.Prefix, Version: c.Version}
			return in.Label()
		}
		for _, c := range d.InputsAdded {
			fmt.Printf("+ %s\n", label(c))
		}
		for _, c := range d.InputsRemoved {
			fmt.Printf("- %s\n", label(c))
		}
		for _, c := range d.InputsChanged {
			if c.OldVersion != c.Version {
				fmt.Printf("~ %s %s -> %s\n", c.Name, c.OldVersion, c.Version)
			} else {
				fmt.Printf("~ %s\n", label(c))
			}
		}
		// The image is mounted at /usr: show paths as the system sees them.
		for _, p := range d.Added {
			fmt.Printf("+ /usr%s\n", p)
		}
		for _, p := range d.Removed {
			fmt.Printf("- /usr%s\n", p)
		}
		for _, c := range d.Changed {
			fmt.Printf("~ /usr%s (%s)\n", c.Path, c.What)
		}
		for _, tc := range d.Triggers {
			fmt.Printf("trigger %s: %s\n", tc.Name, tc.Status)
			for _, p := range tc.Paths {
				fmt.Printf("  + %s\n", p)
			}
			for _, p := range tc.Removed {
				fmt.Printf("  - %s\n", p)
			}
		}
		fmt.Fprintf(os.Stderr, "%d→%d: inputs +%d -%d ~%d, paths +%d -%d ~%d\n", a, b,
			len(d.InputsAdded), len(d.InputsRemoved), len(d.InputsChanged), len(d.Added), len(d.Removed), len(d.Changed))
		return nil
	},
}

// removeResult is the output of remove and prune.
type removeResult struct {
	Removed []uint64        `json:"removed"`
	DryRun  bool            `json:"dry_run,omitempty"`
	GC      *state.GCResult `json:"gc,omitempty"`
	// The two parts of the command, timed: the removal itself and the
	// garbage collection that follows it (unless --no-gc).
	RemoveMS float64 `json:"remove_ms"`
	GCMS     float64 `json:"gc_ms,omitempty"`
}

func removeAndCollect(s *state.State, ids []uint64) error {
	res := removeResult{Removed: ids}
	start := time.Now()
	if len(ids) > 0 {
		if err := s.Remove(ids, stateFlags.force); err != nil {
			var pe *state.ProtectedError
			if errors.As(err, &pe) {
				return fmt.Errorf("remove: %w", err)
			}
			return err
		}
	}
	res.RemoveMS = msSince(start)
	if !stateFlags.noGC {
		start = time.Now()
		g, err := runGC(s, false, true, stateFlags.quiet || stateFlags.json)
		if err != nil {
			return fmt.Errorf("removed %v, then: %w", ids, err)
		}
		res.GC, res.GCMS = g, msSince(start)
	}
	if stateFlags.json {
		return cli.PrintJSON(os.Stdout, res)
	}
	if len(ids) == 0 {
		fmt.Println("nothing to remove")
	} else {
		fmt.Printf("removed %s (%.1f ms)\n", joinIDs(ids), res.RemoveMS)
	}
	if res.GC != nil {
		fmt.Printf("then collected garbage (%.1f ms):\n", res.GCMS)
		printGC(res.GC)
	}
	return nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func joinIDs(ids []uint64) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, strconv.FormatUint(id, 10))
	}
	return strings.Join(parts, " ")
}

var stateRemoveCmd = &cobra.Command{
	Use:   "remove TX|A-B...",
	Short: "Remove transactions (ids and ranges, e.g. 2 5-14 17), then collect garbage",
	Long: `Remove deletes the given transactions (ids and inclusive ranges), then runs
gc unless --no-gc. Removing the active, a mounted
or a pinned transaction is refused without --force; a removal refused in
part removes nothing. Ranges skip ids that no longer exist.`,
	Args: cobra.MinimumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		ids, err := state.ParseIDs(args)
		if err != nil {
			return err
		}
		// A removal only unlinks records: without gc it needs none of
		// Open's upkeep (creating directories, making private what
		// others could reach), which gc's Open still does.
		open := state.Open
		if stateFlags.noGC {
			open = state.OpenExisting
		}
		s, err := open(stateFlags.root)
		if err != nil {
			return err
		}
		// Ids given one by one must exist; ranges may span removed ones.
		// With no range, Remove itself checks that each exists (under
		// its lock, with the same error), so the transactions directory
		// need not be listed.
		if !slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "-") }) {
			return removeAndCollect(s, ids)
		}
		existing, err := s.IDs()
		if err != nil {
			return err
		}
		have := map[uint64]bool{}
		for _, id := range existing {
			have[id] = true
		}
		for _, a := range args {
			for _, f := range strings.FieldsFunc(a, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
				if id, err := strconv.ParseUint(f, 10, 64); err == nil && !have[id] {
					return fmt.Errorf("remove: transaction %d: %w", id, state.ErrNotFound)
				}
			}
		}
		var todo []uint64
		for _, id := range ids {
			if have[id] {
				todo = append(todo, id)
			}
		}
		return removeAndCollect(s, todo)
	},
}

var statePruneCmd = &cobra.Command{
	Use:   "prune --keep N",
	Short: "Remove all but the N newest transactions (never the active or a mounted one), then collect garbage",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if !cmd.Flags().Changed("keep") {
			return errors.New("prune: --keep N is required")
		}
		s, err := state.Open(stateFlags.root)
		if err != nil {
			return err
		}
		ids, err := s.PruneCandidates(stateFlags.keep)
		if err != nil {
			return err
		}
		if stateFlags.dryRun {
			if stateFlags.json {
				return cli.PrintJSON(os.Stdout, removeResult{Removed: ids, DryRun: true})
			}
			fmt.Printf("would remove %s\n", joinIDs(ids))
			return nil
		}
		return removeAndCollect(s, ids)
	},
}

var stateVerifyCmd = &cobra.Command{
	Use:   "verify [TX]",
	Short: "Verify the store and images (all, or one transaction's); same as moss-compose verify",
	Args:  cobra.MaximumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		var id uint64
		if len(args) == 1 {
			var err error
			if id, err = parseOneID(args[0]); err != nil {
				return err
			}
		}
		return runVerify(stateFlags.root, id, stateFlags.noQuar, stateFlags.json, stateFlags.quiet)
	},
}

var statePinCmd = &cobra.Command{
	Use:   "pin NAME TX|sha256:HEX",
	Short: "Keep a transaction or an image from removal and gc under a name (<root>/pins/NAME)",
	Args:  cobra.ExactArgs(2),
	RunE: func(cmd *cobra.Command, args []string) error {
		s, err := state.Open(stateFlags.root)
		if err != nil {
			return err
		}
		v := args[1]
		if !strings.HasPrefix(v, "sha256:") {
			id, err := parseOneID(v)
			if err != nil {
				return err
			}
			if _, err := s.Get(id); err != nil {
				return err
			}
		}
		if err := s.Pin(args[0], v); err != nil {
			return err
		}
		if _, _, err := s.Pins(); err != nil {
			s.Unpin(args[0])
			return err
		}
		if stateFlags.json {
			return cli.PrintJSON(os.Stdout, map[string]string{"pin": args[0], "value": v})
		}
		fmt.Printf("pinned %s as %s\n", v, args[0])
		return nil
	},
}

var stateUnpinCmd = &cobra.Command{
	Use:   "unpin NAME",
	Short: "Remove a pin",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		s, err := state.Open(stateFlags.root)
		if err != nil {
			return err
		}
		if err := s.Unpin(args[0]); err != nil {
			return err
		}
		if stateFlags.json {
			return cli.PrintJSON(os.Stdout, map[string]string{"unpinned": args[0]})
		}
		return nil
	},
}

func init() {
	for _, c := range []*cobra.Command{stateListCmd, stateShowCmd, stateDiffCmd, stateRemoveCmd, statePruneCmd, stateVerifyCmd, statePinCmd, stateUnpinCmd} {
		addStateFlags(c)
	}
	stateShowCmd.Flags().StringVar(&stateFlags.owner, "owner", "", "print the inputs that provide this path")
	stateShowCmd.Flags().BoolVar(&stateFlags.files, "files", false, "list every path of the image")
	stateRemoveCmd.Flags().BoolVar(&stateFlags.force, "force", false, "also remove the active and mounted transactions")
	for _, c := range []*cobra.Command{stateRemoveCmd, statePruneCmd} {
		c.Flags().BoolVar(&stateFlags.noGC, "no-gc", false, "do not collect garbage afterwards")
		c.Flags().BoolVarP(&stateFlags.quiet, "quiet", "q", false, "no progress display")
	}
	statePruneCmd.Flags().IntVar(&stateFlags.keep, "keep", 0, "number of newest transactions to keep")
	statePruneCmd.Flags().BoolVarP(&stateFlags.dryRun, "dry-run", "n", false, "only print what would be removed")
	stateVerifyCmd.Flags().BoolVar(&stateFlags.noQuar, "no-quarantine", false, "report corrupt objects, leave them in place")
	stateVerifyCmd.Flags().BoolVarP(&stateFlags.quiet, "quiet", "q", false, "no progress display")
}
