package state

import (
	"context"
	"fmt"
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
	m := p.Meta
	in := Input{Kind: KindStone, Name: m.Name, Version: fmt.Sprintf("%s-%d-%d", m.Version, m.Release, m.BuildRelease), Source: absPath(file)}
	for _, d := range m.Provides {
		in.Provides = append(in.Provides, d.String())
	}
	for _, d := range m.Conflicts {
		in.Conflicts = append(in.Conflicts, d.String())
	}
	return Fragment{Input: in, Root: root}, nil
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
