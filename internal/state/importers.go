package state

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/internal/dirimport"
	"github.com/mossfs/mossfs/internal/stone"
)

// Importer puts inputs' contents into the state's store and returns them
// as fragments ready for Compose. The caller holds Lock (shared) from the
// first import until Compose returns, so gc cannot take the new objects.
type Importer struct {
	s     *State
	known *stone.KnownIndex
	// Progress, if set, is called as tree files are stored.
	Progress func(files, bytes int64)
}

// NewImporter opens the known-content index under the state root.
func (s *State) NewImporter() (*Importer, error) {
	k, err := stone.NewKnownIndex(s.KnownContentPath())
	if err != nil {
		return nil, err
	}
	return &Importer{s: s, known: k}, nil
}

// Close closes the known-content index.
func (im *Importer) Close() error { return im.known.Close() }

// Sync makes the imported objects and the known-content index durable.
func (im *Importer) Sync() error {
	if err := im.known.Sync(); err != nil {
		return err
	}
	return im.s.Sync()
}

// Stone imports a .stone package: its contents go to the store (those the
// known-content index maps to an object still present are not even
// decompressed), its layout becomes the fragment.
func (im *Importer) Stone(ctx context.Context, file string) (Fragment, error) {
	p, root, err := stone.Import(ctx, file, im.s.store, im.known)
	if err != nil {
		return Fragment{}, err
	}
	return Fragment{Input: stoneInput(p, file), Root: root}, nil
}

func stoneInput(p *stone.Package, file string) Input {
	m := p.Meta
	in := Input{Kind: KindStone, Name: m.Name, Version: fmt.Sprintf("%s-%d-%d", m.Version, m.Release, m.BuildRelease), Source: absPath(file)}
	for _, d := range m.Provides {
		in.Provides = append(in.Provides, d.String())
	}
	for _, d := range m.Conflicts {
		in.Conflicts = append(in.Conflicts, d.String())
	}
	return in
}

// StoneInput reads only a package's metadata (no content is decompressed
// or stored), as the Input that importing it would give.
func StoneInput(file string) (Input, error) {
	f, err := os.Open(file)
	if err != nil {
		return Input{}, fmt.Errorf("stone: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Input{}, fmt.Errorf("stone: %w", err)
	}
	p, err := stone.Open(f, st.Size(), file)
	if err != nil {
		return Input{}, err
	}
	if p.Meta == nil {
		return Input{}, fmt.Errorf("stone %s: no Meta payload", file)
	}
	if err := p.Meta.Validate(); err != nil {
		return Input{}, fmt.Errorf("stone %s: meta: %w", file, err)
	}
	return stoneInput(p, file), nil
}

// CheckPackageConflicts checks, before anything is imported, the conflicts
// the packages' metadata declare among the inputs a compose would have:
// those of from (minus remove and minus those the new inputs replace) and
// the new ones.
func (s *State) CheckPackageConflicts(from uint64, remove []string, add []Input) error {
	var all []Input
	keys := map[string]bool{}
	for _, in := range add {
		keys[in.Key()] = true
	}
	if from != 0 {
		base, err := s.Get(from)
		if err != nil {
			return err
		}
	next:
		for _, in := range base.Inputs {
			for _, arg := range remove {
				if matchesInput(arg, in) {
					continue next
				}
			}
			if !keys[in.Key()] {
				all = append(all, in)
			}
		}
	}
	all = append(all, add...)
	if cs := PackageConflicts(all); len(cs) > 0 {
		return &ConflictError{Conflicts: cs}
	}
	return nil
}

// ParseTreeArg splits a --tree argument DIR[:PREFIX].
func ParseTreeArg(arg string) (dir, prefix string) {
	dir, prefix, _ = strings.Cut(arg, ":")
	if prefix == "" {
		prefix = "/"
	}
	return dir, path.Clean("/" + prefix)
}

// Tree imports a directory placed at prefix inside the image ("/" = its
// root, whose metadata then becomes the image root's).
func (im *Importer) Tree(ctx context.Context, dir, prefix string) (Fragment, error) {
	root, err := dirimport.Import(ctx, dir, dirimport.Options{Sink: im.s.store, Progress: im.Progress})
	if err != nil {
		return Fragment{}, err
	}
	prefix = path.Clean("/" + prefix)
	placed, err := PlaceAt(root, prefix)
	if err != nil {
		return Fragment{}, err
	}
	return Fragment{Input: Input{Kind: KindTree, Name: absPath(dir), Prefix: prefix, Source: absPath(dir)}, Root: placed}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
