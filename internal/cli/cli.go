// Package cli holds what the mossfs commands share: the version string, JSON
// output, finding sibling programs. Progress bars are in package progress.
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
