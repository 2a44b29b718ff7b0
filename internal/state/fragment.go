package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/nodefile"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// EncodeFragment serialises a fragment tree as a composefs dump.
func EncodeFragment(root *tree.Node) ([]byte, error) {
	var b bytes.Buffer
	if err := erofs.WriteDump(&b, root); err != nil {
		return nil, fmt.Errorf("encode fragment: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeFragment parses a fragment; name is used in error messages. The
// tree shares data's memory (no copy of the text): data must not be changed
// afterwards.
func DecodeFragment(data []byte, name string) (*tree.Node, error) {
	root, err := erofs.ParseDumpBytes(data, erofs.DumpOptions{Name: name})
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
	data, _, err := s.loadFragment(tx, in, false)
	return data, err
}

// loadFragment reads one input's fragment file, checks its digest and, if
// decode, parses it; the check runs beside the parse.
func (s *State) loadFragment(tx *Transaction, in Input, decode bool) ([]byte, *tree.Node, error) {
	p := s.FragmentPath(tx, in)
	if in.Fragment != filepath.Base(in.Fragment) || strings.HasPrefix(in.Fragment, ".") {
		return nil, nil, fmt.Errorf("transaction %d: input %s: bad fragment name %q", tx.ID, in.Label(), in.Fragment)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("transaction %d: input %s: %w", tx.ID, in.Label(), err)
	}
	check := make(chan error, 1)
	go func() {
		if _, d := fragmentName(data); d != in.Digest {
			check <- fmt.Errorf("transaction %d: input %s: fragment %s has SHA-256 %s, metadata says %s", tx.ID, in.Label(), p, d, in.Digest)
		}
		close(check)
	}()
	var root *tree.Node
	if decode {
		root, err = DecodeFragment(data, p)
	}
	if cerr := <-check; cerr != nil {
		return nil, nil, cerr
	}
	if err != nil {
		return nil, nil, err
	}
	return data, root, nil
}

// loadFragments loads the fragments of the given inputs of tx in parallel.
// Decoding, an input's tree comes from its node file when there is a good
// one (data[i] is then nil: the text is not read), else from its fragment.
func (s *State) loadFragments(tx *Transaction, inputs []Input, decode bool) ([][]byte, []*tree.Node, error) {
	data := make([][]byte, len(inputs))
	roots := make([]*tree.Node, len(inputs))
	errs := make([]error, len(inputs))
	sem := make(chan struct{}, runtime.NumCPU())
	var wg sync.WaitGroup
	for i, in := range inputs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			if decode {
				if roots[i] = s.loadNodes(tx, in); roots[i] != nil {
					<-sem
					return
				}
			}
			data[i], roots[i], errs[i] = s.loadFragment(tx, in, decode)
			<-sem
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return data, roots, nil
}

// An input's node file (package nodefile) is its fragment's tree in a form
// that loads without parsing: "<digest>.nodes" beside "<digest>.dump", made
// from the fragment's text when the transaction is composed. Stores from
// before node files, and inputs whose node file is missing or damaged,
// load from the fragment.
const nodesSuffix = ".nodes"

// NodesPath returns the path of one input's node file ("" if the input's
// digest cannot name one).
func (s *State) NodesPath(tx *Transaction, in Input) string {
	if _, err := digestKey(in.Digest); err != nil {
		return ""
	}
	return filepath.Join(s.inputsDir(tx.ID), in.Digest+nodesSuffix)
}

func digestKey(digest string) ([32]byte, error) {
	var key [32]byte
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != 32 {
		return key, fmt.Errorf("bad fragment digest %q", digest)
	}
	return [32]byte(b), nil
}

// loadNodes returns an input's tree from its node file, nil if there is no
// good one. The tree is sorted, as Merge and Owners would sort it.
func (s *State) loadNodes(tx *Transaction, in Input) *tree.Node {
	p := s.NodesPath(tx, in)
	if p == "" || in.Fragment != in.Digest+".dump" {
		return nil
	}
	data, err := mapFile(p)
	if err != nil {
		return nil
	}
	key, _ := digestKey(in.Digest)
	root, err := nodefile.Decode(data, key)
	if err != nil {
		return nil
	}
	return root
}

// mapFile maps a file read-only, its pages mapped at once (MAP_POPULATE:
// no page fault per page, no copy into fresh memory, which on a busy
// machine costs more than the decoding). The mapping is never unmapped:
// a tree decoded from it views it (its strings and bytes), for as long as
// the process runs; the processes that load fragments are short-lived
// commands.
func mapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() <= 0 || st.Size() > 1<<32 {
		return nil, fmt.Errorf("%s: size %d", path, st.Size())
	}
	return unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
}

// encodeNodes makes the node file of a fragment from its text (so that its
// tree is the one the text gives, whatever made the text).
func encodeNodes(data []byte, digest, name string) ([]byte, error) {
	key, err := digestKey(digest)
	if err != nil {
		return nil, err
	}
	root, err := DecodeFragment(data, name)
	if err != nil {
		return nil, err
	}
	root.Sort()
	return nodefile.Encode(root, key)
}

// Fragments loads the fragments of all inputs of a transaction, in order.
func (s *State) Fragments(tx *Transaction) ([]Fragment, error) {
	_, roots, err := s.loadFragments(tx, tx.Inputs, true)
	if err != nil {
		return nil, err
	}
	frags := make([]Fragment, len(tx.Inputs))
	for i, in := range tx.Inputs {
		frags[i] = Fragment{Input: in, Root: roots[i]}
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
