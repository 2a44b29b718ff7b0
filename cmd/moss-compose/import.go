package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/progress"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/spf13/cobra"
)

var importFlags struct {
	root    string
	stones  []string
	trees   []string
	dumps   []string
	objects string
	xattrs  []string
	json    bool
	quiet   bool
}

var importCmd = &cobra.Command{
	Use:   "import [--stone FILE]... [--tree DIR]... [--dump FILE]... [FILE|DIR]...",
	Short: "Put the contents of .stone packages, directories and dumps into the store, without composing",
	Long: `Import stores the file contents of .stone packages, directories and composefs
dumps in the content store of the state root (creating it if needed), so
that a later compose finds them there. Positional arguments ending in .stone
are packages, those ending in .dump or .dump.gz composefs dumps, other
arguments directories. A dump names its files' contents by digest: those the
store lacks are taken from the digest store given with --objects (e.g. one
written by mkcomposefs --digest-store) and checked against their digests.
Objects no transaction uses are removed by the next gc.`,
	RunE: runImport,
}

func init() {
	fl := importCmd.Flags()
	fl.StringVar(&importFlags.root, "root", state.DefaultRoot, "state root")
	fl.StringArrayVar(&importFlags.stones, "stone", nil, "a .stone package to import (repeatable)")
	fl.StringArrayVar(&importFlags.trees, "tree", nil, "a directory to import (repeatable)")
	fl.StringArrayVar(&importFlags.dumps, "dump", nil, "a composefs dump to import (repeatable)")
	fl.StringVar(&importFlags.objects, "objects", "", "digest store holding the contents of the dumps' files")
	fl.StringSliceVar(&importFlags.xattrs, "xattrs", nil, "keep only these xattr namespaces of directories (user,security,trusted,system)")
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

// splitInputs sorts positional arguments into stones, dumps and trees.
func splitInputs(args []string, in state.NewInputs) state.NewInputs {
	for _, a := range args {
		switch {
		case strings.HasSuffix(a, ".stone"):
			in.Stones = append(in.Stones, a)
		case strings.HasSuffix(a, ".dump") || strings.HasSuffix(a, ".dump.gz"):
			in.Dumps = append(in.Dumps, a)
		default:
			in.Trees = append(in.Trees, a)
		}
	}
	return in
}

// importAll imports stones, trees (DIR[:PREFIX]) and dumps (FILE[:PREFIX],
// contents from the store or the digest store objects) with im, showing
// progress, and returns their fragments in order: stones, trees, dumps.
func importAll(ctx context.Context, im *state.Importer, in state.NewInputs, objects string, quiet bool) ([]state.Fragment, error) {
	stones, trees := in.Stones, in.Trees
	var frags []state.Fragment
	prog := progress.New(quiet)
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
	if len(in.Dumps) > 0 {
		bar := prog.AddBar("dumps", int64(len(in.Dumps)), false)
		for _, d := range in.Dumps {
			file, prefix := state.ParseTreeArg(d)
			fr, err := im.Dump(ctx, file, prefix, objects)
			if err != nil {
				bar.SetTotal(-1, true)
				return nil, err
			}
			frags = append(frags, fr)
			bar.Add(1)
		}
	}
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
	in := splitInputs(args, state.NewInputs{Stones: importFlags.stones, Trees: importFlags.trees, Dumps: importFlags.dumps})
	if len(in.Stones)+len(in.Trees)+len(in.Dumps) == 0 {
		return fmt.Errorf("import: nothing to import (give --stone FILE, --tree DIR or --dump FILE)")
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
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		return err
	}
	defer im.Close()
	im.XattrNamespaces = importFlags.xattrs
	frags, err := importAll(cmdContext(cmd), im, in, importFlags.objects, importFlags.quiet || importFlags.json)
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
