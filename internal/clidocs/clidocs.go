// Package clidocs generates the man pages and shell completions of a cobra
// command tree. It is linked only into builds with the gendocs tag (the
// Makefile's docs target runs `go run -tags gendocs ./cmd/X gen-docs DIR`),
// so that mossfs, which goes into the initramfs, does not carry the
// markdown-to-roff renderer.
package clidocs

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Generate writes, for root's program NAME:
//
//	DIR/man1/NAME[-SUB…].1                one page per available command
//	DIR/completions/bash/NAME             bash-completion (v2)
//	DIR/completions/zsh/_NAME
//	DIR/completions/fish/NAME.fish
//
// The man pages' date comes from $SOURCE_DATE_EPOCH when set (cobra reads
// it), so a reproducible build gives identical pages.
func Generate(root *cobra.Command, dir string) error {
	name := root.Name()
	root.DisableAutoGenTag = true
	man := filepath.Join(dir, "man1")
	comp := filepath.Join(dir, "completions")
	for _, d := range []string{man, filepath.Join(comp, "bash"), filepath.Join(comp, "zsh"), filepath.Join(comp, "fish")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("gen-docs: %w", err)
		}
	}
	hdr := &doc.GenManHeader{Section: "1", Source: "mossfs " + root.Version, Manual: "mossfs manual"}
	if err := doc.GenManTree(root, hdr, man); err != nil {
		return fmt.Errorf("gen-docs: man pages: %w", err)
	}
	for _, c := range []struct {
		path string
		gen  func(string) error
	}{
		{filepath.Join(comp, "bash", name), func(p string) error { return root.GenBashCompletionFileV2(p, true) }},
		{filepath.Join(comp, "zsh", "_"+name), root.GenZshCompletionFile},
		{filepath.Join(comp, "fish", name+".fish"), func(p string) error { return root.GenFishCompletionFile(p, true) }},
	} {
		if err := c.gen(c.path); err != nil {
			return fmt.Errorf("gen-docs: %s: %w", c.path, err)
		}
	}
	return nil
}

// Command returns the hidden "gen-docs DIR" command that runs Generate for
// root. Hidden commands get no man page.
func Command(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write man pages and shell completions into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Document the tree the installed program has: without this
			// command, and without cobra's completion command when this
			// one was the only reason it was added (cobra adds it to
			// programs that have subcommands).
			root.RemoveCommand(cmd)
			others := 0
			var completion *cobra.Command
			for _, c := range root.Commands() {
				switch c.Name() {
				case "completion":
					completion = c
				case "help":
				default:
					others++
				}
			}
			if others == 0 && completion != nil {
				root.RemoveCommand(completion)
			}
			return Generate(root, args[0])
		},
	}
}
