// Package cli holds what the mossfs commands share: the version string, JSON
// output, and progress bars that show on a terminal and stay quiet in pipes.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Version is set at link time (-X); otherwise it comes from the build info.
var Version = ""

// VersionString returns the version of this build.
func VersionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return v + " (" + s.Value[:12] + ")"
			}
		}
		return v
	}
	return "(unknown)"
}

// PrintJSON writes v as one indented JSON value and a newline to w.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// Progress is a progress display for long work. On a terminal (stderr) it
// draws mpb bars; otherwise every method does nothing.
type Progress struct {
	p *mpb.Progress
}

// NewProgress returns a Progress drawing on stderr if it is a terminal and
// quiet is false.
func NewProgress(quiet bool) *Progress {
	if quiet || !IsTerminal(os.Stderr) {
		return &Progress{}
	}
	return &Progress{p: mpb.New(mpb.WithOutput(os.Stderr), mpb.WithAutoRefresh())}
}

// Bar is one progress bar; a nil *Bar (quiet mode) accepts every call.
type Bar struct{ b *mpb.Bar }

// AddBar adds a bar with a name and a total. bytes selects byte units.
func (p *Progress) AddBar(name string, total int64, bytes bool) *Bar {
	if p == nil || p.p == nil {
		return nil
	}
	counter := decor.CountersNoUnit("%d / %d")
	if bytes {
		counter = decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")
	}
	b := p.p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), counter),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)),
	)
	return &Bar{b: b}
}

// Add advances the bar by n.
func (b *Bar) Add(n int64) {
	if b != nil {
		b.b.IncrInt64(n)
	}
}

// SetTotal changes the total; complete marks the bar done.
func (b *Bar) SetTotal(total int64, complete bool) {
	if b != nil {
		b.b.SetTotal(total, complete)
	}
}

// Wait finishes drawing. Call it once all bars are complete or aborted.
func (p *Progress) Wait() {
	if p != nil && p.p != nil {
		p.p.Shutdown()
	}
}

// Sibling finds the mossfs program name beside this executable (as make
// install puts them, or in a build directory), else on $PATH.
func Sibling(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not installed beside %s nor on $PATH", name, filepath.Base(os.Args[0]))
	}
	return p, nil
}

// SkipCompletionCommand turns cobra's default "completion" command off for
// a run whose args name one of root's subcommands: cobra builds that
// command (five commands with their flags and help text) at every Execute,
// about 2% of a `state remove`, for runs that cannot use it. Runs of
// "completion" itself, of "__complete" (what the installed completion
// scripts run), of "help", of the root alone and of hidden commands (the
// gen-docs of man pages) still get it, so what users see is unchanged. args
// are those Execute will parse.
func SkipCompletionCommand(root *cobra.Command, args []string) {
	if c, _, err := root.Find(args); err == nil && c != root && !c.Hidden && c.Name() != "help" {
		root.CompletionOptions.DisableDefaultCmd = true
	}
}
