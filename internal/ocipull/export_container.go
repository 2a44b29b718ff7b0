package ocipull

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/tree"
)

// ContainerLayers loads what exporting a recorded container image as
// itself needs: its original config and each layer's own tree (whiteouts
// and opaque markers as the layer spelled them), from the fragments kept at
// pull time.
func ContainerLayers(st *state.State, c *state.ContainerImage) ([]byte, []*tree.Node, error) {
	dir := st.ContainerDir(c)
	config, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("container image %s: %w", c.ID(), err)
	}
	layers := make([]*tree.Node, 0, len(c.Layers))
	for i, l := range c.Layers {
		if l.Fragment == "" || l.Fragment != filepath.Base(l.Fragment) || l.Fragment[0] == '.' {
			return nil, nil, fmt.Errorf("container image %s: layer %d: bad fragment name %q", c.ID(), i, l.Fragment)
		}
		p := filepath.Join(dir, l.Fragment)
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("container image %s: layer %d: %w", c.ID(), i, err)
		}
		root, err := state.DecodeFragment(data, p)
		if err != nil {
			return nil, nil, err
		}
		layers = append(layers, root)
	}
	return config, layers, nil
}
