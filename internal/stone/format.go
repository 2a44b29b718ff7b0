package stone

import (
	"context"
	"fmt"
	"os"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/stoneapi"
	"github.com/mossfs/mossfs/tree"
)

// Format is this package as the state package's reader of stones
// (stoneapi.Format): programs that import stones pass it to
// state.NewImporter.
type Format struct{}

var _ stoneapi.Format = Format{}

// OpenKnown opens the known-content index in dir (NewKnownIndex).
func (Format) OpenKnown(dir string) (stoneapi.KnownContent, error) {
	k, err := NewKnownIndex(dir)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// Import imports the package in file (see Import).
func (Format) Import(ctx context.Context, file string, sink cas.ObjectSink, known stoneapi.KnownContent) (stoneapi.Package, *tree.Node, error) {
	var k KnownContent
	if known != nil {
		k = known
	}
	p, root, err := Import(ctx, file, sink, k)
	if err != nil {
		return stoneapi.Package{}, nil, err
	}
	return apiPackage(p.Meta), root, nil
}

// Read reads the metadata and layout of the package in file, not its
// contents (see stoneapi.Format).
func (Format) Read(file string, digest func(xxh [16]byte) [32]byte) (stoneapi.Package, *tree.Node, error) {
	f, err := os.Open(file)
	if err != nil {
		return stoneapi.Package{}, nil, fmt.Errorf("stone: %w", err)
	}
	defer f.Close() // the content is not read
	st, err := f.Stat()
	if err != nil {
		return stoneapi.Package{}, nil, fmt.Errorf("stone: %w", err)
	}
	p, err := Open(f, st.Size(), file)
	if err != nil {
		return stoneapi.Package{}, nil, err
	}
	if p.Meta == nil {
		return stoneapi.Package{}, nil, fmt.Errorf("stone %s: no Meta payload", file)
	}
	if err := p.Meta.Validate(); err != nil {
		return stoneapi.Package{}, nil, fmt.Errorf("stone %s: meta: %w", file, err)
	}
	digests := map[XXH128][32]byte{}
	for _, e := range p.Layout {
		if e.Type == LayoutRegular && e.Digest != EmptyXXH128 {
			digests[e.Digest] = digest(e.Digest)
		}
	}
	root, err := p.Tree(digests)
	if err != nil {
		return stoneapi.Package{}, nil, err
	}
	return apiPackage(p.Meta), root, nil
}

func apiPackage(m *Meta) stoneapi.Package {
	p := stoneapi.Package{Name: m.Name, Version: fmt.Sprintf("%s-%d-%d", m.Version, m.Release, m.BuildRelease)}
	for _, d := range m.Provides {
		p.Provides = append(p.Provides, d.String())
	}
	for _, d := range m.Conflicts {
		p.Conflicts = append(p.Conflicts, d.String())
	}
	return p
}
