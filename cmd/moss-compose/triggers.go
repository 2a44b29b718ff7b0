package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/systrig"
	"github.com/spf13/cobra"
)

var triggersCmd = &cobra.Command{
	Use:   "triggers",
	Short: "Run moss triggers",
}

var triggersRunFlags struct {
	scope, root, usr string
	tx               uint64
	booted, json     bool
	timeout          time.Duration
}

var triggersRunCmd = &cobra.Command{
	Use:   "run --scope sys",
	Short: "Run the system triggers of the live /usr on this system",
	Long: `Run the system triggers (usr/share/moss/triggers/sys.d) of the transaction
mounted at --usr, as moss does after it makes a state live: matched against
every path of that tree, in moss's order, each command run directly on the
host with the caller's environment. A line is printed per command; a command
that fails, cannot start or times out is a warning (exit status 0): what
the triggers write in /etc and /var is redone on the next run. Triggers
that write into /usr fail, since /usr is a read-only image; the warning
names them.

mossfs switch and rollback run this after switching /usr (unless given
--skip-triggers); mossfs boot does not (in the initramfs /var may not be
mounted yet), and mossfs-triggers.service runs it with --booted once the
booted system is up: then nothing runs when the record in the state root
(<root>/system-triggers/last.json: transaction, times, triggers, exit
codes) says they already ran for the booted transaction.

Transaction triggers (tx.d) run while composing, not here.`,
	Args: cobra.NoArgs,
	RunE: runTriggers,
}

func init() {
	fl := triggersRunCmd.Flags()
	fl.StringVar(&triggersRunFlags.scope, "scope", "", "trigger scope: sys (tx triggers run while composing)")
	fl.StringVar(&triggersRunFlags.root, "root", state.DefaultRoot, "state root (holds the record)")
	fl.StringVar(&triggersRunFlags.usr, "usr", "/usr", "the live /usr")
	fl.Uint64Var(&triggersRunFlags.tx, "tx", 0, "the transaction mounted at --usr (default: its .stateID)")
	fl.BoolVar(&triggersRunFlags.booted, "booted", false, "run only if the last run was not for this transaction (the boot-time unit)")
	fl.BoolVar(&triggersRunFlags.json, "json", false, "print the record of the run as JSON on stdout")
	fl.DurationVar(&triggersRunFlags.timeout, "timeout", 10*time.Minute, "time limit per command")
	triggersRunCmd.MarkFlagRequired("scope")
	triggersCmd.AddCommand(triggersRunCmd)
	rootCmd.AddCommand(triggersCmd)
}

func runTriggers(cmd *cobra.Command, args []string) error {
	fl := triggersRunFlags
	switch fl.scope {
	case "sys":
	case "tx":
		return fmt.Errorf("triggers run: transaction triggers run while composing (moss-compose compose)")
	default:
		return fmt.Errorf("triggers run: --scope %q: want sys", fl.scope)
	}
	log := cmd.ErrOrStderr()
	tx := fl.tx
	if tx == 0 {
		p := filepath.Join(fl.usr, state.StateIDName)
		data, err := os.ReadFile(p)
		if fl.booted && errors.Is(err, fs.ErrNotExist) {
			// Booted without mossfs boot (moss's own /usr, or none).
			fmt.Fprintf(log, "%s is not a mossfs transaction (no %s): no system triggers to run\n", fl.usr, state.StateIDName)
			return nil
		}
		if err != nil {
			return fmt.Errorf("triggers run: which transaction is live: %w", err)
		}
		if tx, err = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err != nil {
			return fmt.Errorf("triggers run: %s: not a transaction id: %q", p, strings.TrimSpace(string(data)))
		}
	}
	st, err := state.Open(fl.root)
	if err != nil {
		return fmt.Errorf("triggers run: %w", err)
	}
	lock, err := st.LockSysTriggers()
	if err != nil {
		return fmt.Errorf("triggers run: %w", err)
	}
	defer lock.Unlock()
	last, err := st.LastSysTriggers()
	if err != nil {
		return fmt.Errorf("triggers run: %w", err)
	}
	if fl.booted && last != nil && last.Tx == tx {
		fmt.Fprintf(log, "system triggers already ran for transaction %d (%s)\n", tx, last.Finished.Local().Format(time.DateTime))
		if fl.json {
			return cli.PrintJSON(cmd.OutOrStdout(), last)
		}
		return nil
	}
	fmt.Fprintf(log, "running the system triggers of transaction %d (%s)\n", tx, fl.usr)
	rec, err := systrig.Run(context.Background(), systrig.Options{Usr: fl.usr, Tx: tx, Timeout: fl.timeout, Log: log})
	if err != nil {
		return fmt.Errorf("triggers run: %w", err)
	}
	if err := st.WriteSysTriggers(rec); err != nil {
		return fmt.Errorf("triggers run: ran, but %w", err)
	}
	if n := rec.Failed(); n > 0 {
		fmt.Fprintf(log, "system triggers of transaction %d: %d of %d commands failed (warnings above)\n", tx, n, countCommands(rec))
	}
	if fl.json {
		return cli.PrintJSON(cmd.OutOrStdout(), rec)
	}
	return nil
}

func countCommands(r *state.SysTriggerRun) int {
	n := 0
	for _, t := range r.Triggers {
		n += len(t.Commands)
	}
	return n
}
