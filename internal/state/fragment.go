package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/tree"
)

// EncodeFragment serialises a fragment tree as a composefs dump.
func EncodeFragment(root *tree.Node) ([]byte, error) {
	var b bytes.Buffer
	if err := erofs.WriteDump(&b, root); err != nil {
		return nil, fmt.Errorf("encode fragment: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeFragment parses a fragment; name is used in error messages.
func DecodeFragment(data []byte, name string) (*tree.Node, error) {
	root, err := erofs.ParseDump(bytes.NewReader(data), erofs.DumpOptions{Name: name})
	if err != nil {
		return nil, fmt.Errorf("fragment %s: %w", name, err)
	}
	return root, nil
}

// fragmentName returns the content-derived file name of a fragment.
func fragmentName(data []byte) (name, digest string) {
	sum := sha256.Sum256(data)
	digest = hex.EncodeToString(sum[:])
	return digest + ".dump", digest
}

// FragmentPath returns the path of one input's fragment.
func (s *State) FragmentPath(tx *Transaction, in Input) string {
	return filepath.Join(s.inputsDir(tx.ID), in.Fragment)
}

// readFragment reads and checks one input's fragment file.
func (s *State) readFragment(tx *Transaction, in Input) ([]byte, error) {
	p := s.FragmentPath(tx, in)
	if in.Fragment != filepath.Base(in.Fragment) || strings.HasPrefix(in.Fragment, ".") {
		return nil, fmt.Errorf("transaction %d: input %s: bad fragment name %q", tx.ID, in.Label(), in.Fragment)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("transaction %d: input %s: %w", tx.ID, in.Label(), err)
	}
	if _, d := fragmentName(data); d != in.Digest {
		return nil, fmt.Errorf("transaction %d: input %s: fragment %s has SHA-256 %s, metadata says %s", tx.ID, in.Label(), p, d, in.Digest)
	}
	return data, nil
}

// Fragments loads the fragments of all inputs of a transaction, in order.
func (s *State) Fragments(tx *Transaction) ([]Fragment, error) {
	frags := make([]Fragment, 0, len(tx.Inputs))
	for _, in := range tx.Inputs {
		data, err := s.readFragment(tx, in)
		if err != nil {
			return nil, err
		}
		root, err := DecodeFragment(data, s.FragmentPath(tx, in))
		if err != nil {
			return nil, err
		}
		frags = append(frags, Fragment{Input: in, Root: root})
	}
	return frags, nil
}

// Owners returns the inputs of tx that provide path (a path in the image,
// i.e. relative to /usr; a leading "/usr/" is accepted too).
func (s *State) Owners(tx *Transaction, p string) ([]Input, error) {
	clean := path.Clean("/" + p)
	frags, err := s.Fragments(tx)
	if err != nil {
		return nil, err
	}
	var out []Input
	for _, f := range frags {
		f.Root.Sort()
		if f.Root.Lookup(clean) != nil {
			out = append(out, f.Input)
		}
	}
	if len(out) == 0 {
		if rest, ok := strings.CutPrefix(clean, "/usr/"); ok {
			return s.Owners(tx, rest)
		}
	}
	return out, nil
}

// PlaceAt returns a tree whose root is the image root and which holds t at
// prefix ("" or "/" = the root itself: t is returned). Directories on the
// way are created root:root 0755, mtime 0 (as moss synthesizes parents);
// t's root keeps its own metadata and takes the last component's name.
func PlaceAt(t *tree.Node, prefix string) (*tree.Node, error) {
	clean := path.Clean("/" + prefix)
	if clean == "/" {
		return t, nil
	}
	if !t.IsDir() {
		return nil, fmt.Errorf("place tree at %s: not a directory", prefix)
	}
	comps := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	for _, c := range comps {
		if c == ".." || c == "." || len(c) > 255 {
			return nil, fmt.Errorf("place tree at %s: bad path component %q", prefix, c)
		}
	}
	root := tree.NewDir("", 0o755)
	cur := root
	for _, c := range comps[:len(comps)-1] {
		d := tree.NewDir(c, 0o755)
		cur.AddChild(d)
		cur = d
	}
	t.Name = comps[len(comps)-1]
	cur.AddChild(t)
	return root, nil
}
