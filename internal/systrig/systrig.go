// Package systrig runs the system triggers of a live /usr on the host, as
// moss does after it swaps /usr: the sys scope's trigger files
// (usr/share/moss/triggers/sys.d) of the new tree, matched against every
// path of that tree, in moss's order (package triggers), each command
// directly (no sandbox, no shell, stdin from /dev/null, working directory
// /, the caller's environment). A command that fails, cannot start or times
// out is a warning: the switch it follows has already happened and is not
// undone. A trigger writing into /usr fails, since the transaction is a
// read-only image; the warning says so (AerynOS's vlc_cache_gen does it).
package systrig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/triggers"
)

// Options for Run.
type Options struct {
	// Usr is the live /usr (default "/usr"). Commands run on the host as
	// written in the trigger files, so their /usr paths name it only when
	// it is mounted at /usr.
	Usr string
	// Tx is the transaction recorded for the run.
	Tx uint64
	// Timeout per command (default 10 minutes).
	Timeout time.Duration
	// Log receives a line per command and the warnings.
	Log io.Writer
}

// outputTail is how much of a failing command's output is kept.
const outputTail = 4096

// Plan loads the system triggers of usr and matches them against every
// path below it ("/", "/usr", "/usr/…", as moss's VFS names them).
func Plan(usr string) ([]*triggers.Run, []*triggers.LoadError, error) {
	var trigs []*triggers.Trigger
	var skipped []*triggers.LoadError
	dir := filepath.Join(usr, "share/moss/triggers")
	root, err := os.OpenRoot(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("system triggers: %w", err)
	}
	defer root.Close()
	trigs, skipped = triggers.Load(root.FS(), triggers.System)
	if len(trigs) == 0 {
		return nil, skipped, nil
	}
	c, err := triggers.NewCollection(trigs)
	if err != nil {
		return nil, skipped, fmt.Errorf("system triggers in %s: %w", dir, err)
	}
	c.Add("/")
	c.Add("/usr")
	err = filepath.WalkDir(usr, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == usr {
			return nil
		}
		rel, err := filepath.Rel(usr, p)
		if err != nil {
			return err
		}
		c.Add("/usr/" + filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, skipped, fmt.Errorf("system triggers: listing %s: %w", usr, err)
	}
	return c.Plan(), skipped, nil
}

// Run runs the system triggers of opts.Usr and returns the record of the
// run. Only a plan that cannot be made is an error; failing commands are
// warnings in the log and exit codes in the record.
func Run(ctx context.Context, opts Options) (*state.SysTriggerRun, error) {
	if opts.Usr == "" {
		opts.Usr = "/usr"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	rec := &state.SysTriggerRun{Tx: opts.Tx, Usr: opts.Usr, Started: time.Now().UTC(), Triggers: []state.SysTriggerResult{}}
	plan, skipped, err := Plan(opts.Usr)
	for _, s := range skipped {
		fmt.Fprintf(opts.Log, "warning: system trigger file %s skipped: %v\n", s.File, s.Err)
		rec.Skipped = append(rec.Skipped, s.File)
	}
	if err != nil {
		return nil, err
	}
	if len(plan) == 0 {
		fmt.Fprintf(opts.Log, "no system triggers to run for transaction %d\n", opts.Tx)
	}
	for i, r := range plan {
		res := state.SysTriggerResult{Name: r.Name}
		for _, cmd := range r.Commands {
			c := runCommand(ctx, cmd, opts.Timeout)
			res.Commands = append(res.Commands, c)
			report(opts.Log, i+1, len(plan), r.Name, opts.Usr, c)
		}
		rec.Triggers = append(rec.Triggers, res)
	}
	rec.Finished = time.Now().UTC()
	return rec, nil
}

// report prints the line for one command and, if it failed, a warning that
// names the trigger.
func report(w io.Writer, n, of int, name, usr string, c state.SysTriggerCommand) {
	if c.Exit == 0 {
		fmt.Fprintf(w, "system trigger %d/%d %s: %s: ok (%s)\n", n, of, name, c.Command, c.Duration)
		return
	}
	why := c.Error
	if why == "" {
		why = fmt.Sprintf("exit status %d", c.Exit)
	}
	fmt.Fprintf(w, "system trigger %d/%d %s: %s: failed (%s, %s)\n", n, of, name, c.Command, why, c.Duration)
	if strings.Contains(c.Output, "Read-only file system") {
		fmt.Fprintf(w, "warning: system trigger %s writes into the read-only %s (the transaction's image): it belongs in tx.d, where its output becomes part of the transaction\n", name, usr)
	} else {
		fmt.Fprintf(w, "warning: system trigger %s failed\n", name)
	}
	if out := strings.TrimSpace(c.Output); out != "" {
		fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(out, "\n", "\n  "))
	}
}

// runCommand runs one handler as moss's execute_trigger_directly does.
func runCommand(ctx context.Context, cmd triggers.Command, timeout time.Duration) (res state.SysTriggerCommand) {
	res = state.SysTriggerCommand{Command: cmd.String(), Exit: -1}
	start := time.Now()
	defer func() { res.Duration = time.Since(start).Round(time.Millisecond).String() }()
	if cmd.IsDelete {
		res.Error = "delete handlers are not supported (moss cannot run them either)"
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Run, cmd.Args...)
	c.Dir = "/"
	var out tailBuffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	res.Output = out.String()
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		res.Error = fmt.Sprintf("timed out after %s", timeout)
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode()
		if res.Exit < 0 {
			res.Error = ee.String()
		}
	case err != nil:
		res.Error = err.Error()
	default:
		res.Exit = 0
		res.Output = ""
	}
	return res
}

// tailBuffer keeps the last outputTail bytes written to it.
type tailBuffer struct{ b bytes.Buffer }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 2*outputTail {
		keep := append([]byte(nil), t.b.Bytes()[t.b.Len()-outputTail:]...)
		t.b.Reset()
		t.b.Write(keep)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	b := t.b.Bytes()
	if len(b) > outputTail {
		b = b[len(b)-outputTail:]
	}
	return string(b)
}
