package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var importFlags struct {
	root   string
	stones []string
	trees  []string
	json   bool
	quiet  bool
}

var importCmd = &cobra.Command{
	Use:   "import [--stone FILE]... [--tree DIR]... [FILE|DIR]...",
	Short: "Put the contents of .stone packages and directories into the store, without composing",
	Long: `Import stores the file contents of .stone packages and directories in the
content store of the state root (creating it if needed), so that a later
compose finds them there. Positional arguments ending in .stone are packages,
other arguments directories. Objects no transaction uses are removed by the
next gc.`,
	RunE: runImport,
}

func init() {
	fl := importCmd.Flags()
	fl.StringVar(&importFlags.root, "root", state.DefaultRoot, "state root")
	fl.StringArrayVar(&importFlags.stones, "stone", nil, "a .stone package to import (repeatable)")
	fl.StringArrayVar(&importFlags.trees, "tree", nil, "a directory to import (repeatable)")
	fl.BoolVar(&importFlags.json, "json", false, "print the result as JSON")
	fl.BoolVarP(&importFlags.quiet, "quiet", "q", false, "no progress display")
	rootCmd.AddCommand(importCmd)
}

// importedInput is one line of import/compose output.
type importedInput struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Entries int    `json:"entries"`
	Files   int    `json:"files"`
	Objects int    `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

// splitInputs sorts positional arguments into stones and trees.
func splitInputs(args []string, stones, trees []string) ([]string, []string) {
	for _, a := range args {
		if strings.HasSuffix(a, ".stone") {
			stones = append(stones, a)
		} else {
			trees = append(trees, a)
		}
	}
	return stones, trees
}

// importAll imports stones and trees (DIR[:PREFIX]) with im, showing
// progress, and returns their fragments in order: stones, then trees.
func importAll(ctx context.Context, im *state.Importer, stones, trees []string, quiet bool) ([]state.Fragment, error) {
	var frags []state.Fragment
	prog := cli.NewProgress(quiet)
	defer prog.Wait()
	if len(stones) > 0 {
		bar := prog.AddBar("stones", int64(len(stones)), false)
		for _, f := range stones {
			fr, err := im.Stone(ctx, f)
			if err != nil {
				bar.SetTotal(-1, true)
				return nil, err
			}
			frags = append(frags, fr)
			bar.Add(1)
		}
	}
	for _, t := range trees {
		dir, prefix := state.ParseTreeArg(t)
		bar := prog.AddBar("tree "+dir, 0, true)
		var last int64
		im.Progress = func(files, bytes int64) {
			bar.SetTotal(bytes, false)
			bar.Add(bytes - last)
			last = bytes
		}
		fr, err := im.Tree(ctx, dir, prefix)
		bar.SetTotal(last, true)
		if err != nil {
			return nil, err
		}
		frags = append(frags, fr)
	}
	im.Progress = nil
	return frags, nil
}

func describeInputs(frags []state.Fragment) []importedInput {
	out := []importedInput{}
	for _, f := range frags {
		c := state.CountTree(f.Root)
		out = append(out, importedInput{Kind: f.Input.Kind, Name: f.Input.Name, Version: f.Input.Version,
			Prefix: f.Input.Prefix, Entries: c.Entries - 1, Files: c.Files, Objects: c.Objects, Bytes: c.Bytes})
	}
	return out
}

func runImport(cmd *cobra.Command, args []string) error {
	stones, trees := splitInputs(args, importFlags.stones, importFlags.trees)
	if len(stones)+len(trees) == 0 {
		return fmt.Errorf("import: nothing to import (give --stone FILE or --tree DIR)")
	}
	s, err := state.Create(importFlags.root)
	if err != nil {
		return err
	}
	lk, err := s.Lock()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	im, err := s.NewImporter()
	if err != nil {
		return err
	}
	defer im.Close()
	frags, err := importAll(cmdContext(cmd), im, stones, trees, importFlags.quiet || importFlags.json)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	state.Crash(state.CPImportObjects)
	if err := im.Sync(); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	res := describeInputs(frags)
	if importFlags.json {
		return cli.PrintJSON(os.Stdout, res)
	}
	for _, r := range res {
		name := r.Name
		if r.Version != "" {
			name += "-" + r.Version
		}
		fmt.Printf("imported %s %s: %d entries, %d files, %d objects, %s\n", r.Kind, name, r.Entries, r.Files, r.Objects, humanBytes(r.Bytes))
	}
	return nil
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// cmdContext returns the command's context, or Background outside Execute.
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
