package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "prog", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(&cobra.Command{Use: "run", Run: func(*cobra.Command, []string) {}})
	root.AddCommand(&cobra.Command{Use: "gen-docs", Hidden: true, Run: func(*cobra.Command, []string) {}})
	return root
}

// TestSkipCompletionCommand: the default completion command is left out
// only of runs of a visible subcommand; "completion", "__complete", "help",
// the root and hidden commands keep it, and then it works.
func TestSkipCompletionCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		skip bool
	}{
		{[]string{"run"}, true},
		{[]string{"run", "--help"}, true},
		{nil, false},
		{[]string{"--help"}, false},
		{[]string{"help", "run"}, false},
		{[]string{"completion", "bash"}, false},
		{[]string{"__complete", "completion", "b"}, false},
		{[]string{"__complete", "r"}, false},
		{[]string{"gen-docs"}, false},
		{[]string{"nosuch"}, false},
	} {
		root := newRoot()
		SkipCompletionCommand(root, tc.args)
		if got := root.CompletionOptions.DisableDefaultCmd; got != tc.skip {
			t.Errorf("args %q: completion command off = %v, want %v", tc.args, got, tc.skip)
		}
	}
	for _, args := range [][]string{{"completion", "bash"}, {"__complete", "completion", "b"}} {
		root := newRoot()
		SkipCompletionCommand(root, args)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if want := map[string]string{"completion": "bash completion", "__complete": "bash"}[args[0]]; !strings.Contains(out.String(), want) {
			t.Errorf("%q printed %q, want it to contain %q", args, out.String(), want)
		}
	}
}
