package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mossfs/mossfs/internal/adopt"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/progress"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var adoptFlags struct {
	root     string
	mossRoot string
	state    uint64
	all      bool
	newest   bool
	follow   bool
	blsDirs  []string
	noExtras bool
	skipTrig bool
	trigTime time.Duration
	json     bool
	quiet    bool
}

var adoptCmd = &cobra.Command{
	Use:   "adopt --moss-root DIR (--state N | --all | --newest) [--follow]",
	Short: "Build transactions from the states of a moss installation (its databases and assets)",
	Long: `Adopt builds the transaction of moss state N (--state N, every state with
--all, the newest with --newest) from the moss installation at --moss-root
(the directory holding .moss; "/" on a running system): the packages the
state selects, laid out from moss's layout database as moss's blit lays them
out (implicit parent directories root:root 0755, symlinked directories such
as lib64 -> lib re-parented, the first of duplicate paths winning with a
warning), each path keeping its own mode and owner. Contents come from
moss's assets/v2, each checked against its XXH3-128 as it enters the store,
by reflink where the file system allows, else by copy (never by hardlink).
Files that no layout row names but moss's archived tree of the state
(.moss/root/N/usr, or the live /usr when it is state N) holds, such as
lib/os-release and transaction-trigger output, are taken from there and
listed.

The transaction gets moss's state id, so moss.fstx=N and /usr/.stateID mean
the same transaction, and the state root then follows moss: a native
compose into it needs --id. Adopting a state again whose selection is
unchanged does nothing. moss's databases are opened read-only while moss's
lock (.moss/.moss-lockfile) is held shared: a running moss install is waited
for.

--follow is what a moss hook or a systemd path unit runs after every moss
transaction (it implies --newest unless a state is given): adopt the newest
state, make it the next boot's default entry (the BLS entries under --bls-dir,
else the standard directories under / that hold mossfs entries), and remove
the transactions of states moss has pruned, unless pinned, active or
mounted. It does not switch the running system: once /usr is a mossfs mount,
moss's own renameat2(RENAME_EXCHANGE) of /usr fails with EBUSY, so the
switch happens at the next boot.`,
	Args: cobra.NoArgs,
	RunE: runAdopt,
}

func init() {
	fl := adoptCmd.Flags()
	fl.StringVar(&adoptFlags.root, "root", state.DefaultRoot, "state root")
	fl.StringVar(&adoptFlags.mossRoot, "moss-root", "/", "moss installation root (holding .moss)")
	fl.Uint64Var(&adoptFlags.state, "state", 0, "adopt this moss state")
	fl.BoolVar(&adoptFlags.all, "all", false, "adopt every moss state")
	fl.BoolVar(&adoptFlags.newest, "newest", false, "adopt the newest moss state")
	fl.BoolVar(&adoptFlags.follow, "follow", false, "adopt the newest state, make it the next boot's default, drop states moss pruned")
	fl.StringSliceVar(&adoptFlags.blsDirs, "bls-dir", nil, "with --follow: BLS entries directory whose default becomes the newest state")
	fl.BoolVar(&adoptFlags.noExtras, "no-extras", false, "leave out the files of moss's archived tree that no layout row names")
	fl.BoolVar(&adoptFlags.skipTrig, "skip-triggers", false, "run no transaction trigger (needed as a user who is not root)")
	fl.DurationVar(&adoptFlags.trigTime, "trigger-timeout", state.DefaultTriggerTimeout, "time limit of one trigger handler")
	fl.BoolVar(&adoptFlags.json, "json", false, "print the result as JSON")
	fl.BoolVarP(&adoptFlags.quiet, "quiet", "q", false, "no progress display or warnings")
	rootCmd.AddCommand(adoptCmd)
}

type adoptOutput struct {
	Results     []*adopt.Result   `json:"results"`
	BootDefault []string          `json:"boot_default,omitempty"`
	Pruned      []uint64          `json:"pruned,omitempty"`
	Kept        map[uint64]string `json:"kept,omitempty"`
}

func runAdopt(cmd *cobra.Command, args []string) error {
	f := adoptFlags
	n := 0
	for _, b := range []bool{f.state != 0, f.all, f.newest} {
		if b {
			n++
		}
	}
	if f.follow && n == 0 {
		f.newest, n = true, 1
	}
	if n != 1 {
		return errors.New("adopt: give exactly one of --state N, --all, --newest (or --follow)")
	}
	if os.Geteuid() != 0 && !f.skipTrig {
		return errors.New("adopt: transaction triggers run in containers as root: adopt as root, or pass --skip-triggers")
	}
	if len(f.blsDirs) > 0 && !f.follow {
		return errors.New("adopt: --bls-dir needs --follow")
	}
	quiet := f.quiet || f.json
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	in, err := adopt.Open(f.mossRoot, func() {
		if !quiet {
			fmt.Fprintf(os.Stderr, "adopt: a moss client holds %s/.moss/.moss-lockfile; waiting for it\n", f.mossRoot)
		}
	})
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	defer in.Close()
	states, err := in.States(ctx)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	var ids []uint64
	switch {
	case f.state != 0:
		ids = []uint64{f.state}
	case f.all:
		for _, st := range states {
			ids = append(ids, st.ID)
		}
	case f.newest:
		if len(states) == 0 {
			return fmt.Errorf("adopt: the moss installation %s has no states", f.mossRoot)
		}
		ids = []uint64{states[len(states)-1].ID}
	}
	s, err := state.Create(f.root)
	if err != nil {
		return err
	}
	lk, err := s.Lock()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	out := adoptOutput{Results: []*adopt.Result{}}
	for _, id := range ids {
		prog := progress.New(quiet)
		bar := prog.AddBar(fmt.Sprintf("moss state %d", id), 0, false)
		var last int
		res, err := in.State(ctx, s, id, adopt.Options{NoExtras: f.noExtras,
			Triggers: state.TriggerOptions{Skip: f.skipTrig, Timeout: f.trigTime, Warn: func(m string) {
				if !quiet {
					fmt.Fprintln(os.Stderr, "warning:", m)
				}
			}},
			Progress: func(files int, _ int64) {
				bar.Add(int64(files - last))
				last = files
			}})
		bar.SetTotal(int64(last), true)
		prog.Wait()
		if err != nil {
			return fmt.Errorf("adopt: %w", err)
		}
		out.Results = append(out.Results, res)
		if !quiet {
			reportAdopt(res)
		}
	}
	lk.Unlock()
	if f.follow {
		newest := ids[len(ids)-1]
		dirs, err := adopt.BootDefault(s, newest, f.blsDirs)
		out.BootDefault = dirs
		if err != nil {
			return fmt.Errorf("adopt --follow: transaction %d adopted, but the next boot would not start it: %w", newest, err)
		}
		if !quiet {
			if len(dirs) == 0 {
				fmt.Fprintln(os.Stderr, "adopt --follow: no mossfs boot entries found (write the first with mossfs bls); the boot default is unchanged")
			}
			for _, d := range dirs {
				fmt.Fprintf(os.Stderr, "boot default in %s: transaction %d\n", d, newest)
			}
		}
		pruned, kept, err := adopt.PruneFollowed(s, in.Root, states)
		out.Pruned, out.Kept = pruned, kept
		if err != nil {
			return fmt.Errorf("adopt --follow: %w", err)
		}
		if !quiet {
			for _, id := range pruned {
				fmt.Fprintf(os.Stderr, "removed transaction %d (moss pruned its state)\n", id)
			}
			for id, why := range kept {
				fmt.Fprintf(os.Stderr, "kept transaction %d though moss pruned its state (%s)\n", id, why)
			}
		}
	}
	if f.json {
		return cli.PrintJSON(os.Stdout, out)
	}
	for _, r := range out.Results {
		fmt.Println(r.Tx.ID)
	}
	return nil
}

func reportAdopt(r *adopt.Result) {
	if r.Unchanged {
		fmt.Fprintf(os.Stderr, "moss state %d: transaction %d already adopted, selection unchanged\n", r.State, r.Tx.ID)
		return
	}
	for _, w := range r.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if r.ExtrasFrom != "" {
		fmt.Fprintf(os.Stderr, "moss state %d: %d file(s) no layout row names, taken from %s:\n", r.State, len(r.Extras), r.ExtrasFrom)
		for _, x := range r.Extras {
			fmt.Fprintf(os.Stderr, "  /usr/%s (%s)\n", x.Path, x.Type)
		}
	} else {
		fmt.Fprintf(os.Stderr, "moss state %d: no archived tree, so no os-release or transaction-trigger output\n", r.State)
	}
	for _, tr := range r.Tx.Triggers {
		how := "ran"
		if !tr.Ran {
			how = "output carried over"
		}
		fmt.Fprintf(os.Stderr, "moss state %d: transaction trigger %s: %s\n", r.State, tr.Name, how)
	}
	t := r.Transfer
	c := r.Tx.Counts
	fmt.Fprintf(os.Stderr, "moss state %d: transaction %d, %d entries (%d files, %d objects); contents: %s copied (%d), %s reflinked (%d), %s already in the store (%d)\n",
		r.State, r.Tx.ID, c.Entries, c.Files, c.Objects,
		human(int64(t.CopiedBytes)), t.CopiedFiles, human(int64(t.ReflinkedBytes)), t.ReflinkedFiles,
		human(int64(t.PresentBytes)), t.PresentFiles)
}
