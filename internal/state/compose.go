package state

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// ComposeOptions describe a new transaction.
type ComposeOptions struct {
	// From is the transaction whose inputs are the base (0: start empty).
	From uint64
	// Remove names base inputs to leave out: a package name, a tree's
	// directory, or an input's label or key.
	Remove []string
	// Add are new inputs whose contents are already in the store. An added
	// input with the same key as a base input replaces it (a package upgrade
	// or a re-imported tree). Fragment and Digest are filled in here.
	Add []Fragment
	// Time of the transaction (zero: now).
	Time time.Time
	// Force composes a new transaction even when it would hold what From
	// holds (without it such a compose creates nothing; see Unchanged).
	Force bool
	// ID, if not zero, is the new transaction's id instead of the next
	// free one: it must not be taken. A state root that follows moss
	// (FollowsMoss) composes only with an ID, so that its ids stay moss's.
	ID uint64
	// Moss records the moss state an adopted transaction comes from.
	Moss *MossOrigin
	// Triggers control the transaction triggers.
	Triggers TriggerOptions
}

// ComposeResult describes what Compose did.
type ComposeResult struct {
	Tx *Transaction `json:"transaction"`
	// Replaced base inputs (upgrades) and Removed ones.
	Replaced []Input `json:"replaced,omitempty"`
	Removed  []Input `json:"removed,omitempty"`
	// Unchanged: the inputs are those of the base transaction (nothing
	// removed, every new input the same as the one it replaces), so nothing
	// was created and Tx is the base.
	Unchanged bool `json:"unchanged,omitempty"`
}

// sameInput reports whether a new input contributes what an old one does:
// the same fragment, at the same place, with the same package metadata.
func sameInput(a, b Input) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Version == b.Version && a.Prefix == b.Prefix &&
		a.Digest == b.Digest && slices.Equal(a.Provides, b.Provides) && slices.Equal(a.Conflicts, b.Conflicts)
}

// matchesInput reports whether a --remove argument names the input.
func matchesInput(arg string, in Input) bool {
	if arg == in.Name || arg == in.Label() || arg == in.Key() {
		return true
	}
	return (in.Kind == KindTree || in.Kind == KindDump) && filepath.Clean(arg) == filepath.Clean(in.Name)
}

// baseSplit sorts a base transaction's inputs for a compose.
type baseSplit struct {
	kept, removed, replaced []Input
	unused                  []string // --remove arguments that matched nothing
}

// splitBase decides which of base's inputs (nil: none) a compose keeps:
// those not named by remove and not replaced by a new input (newKeys holds
// the new inputs' keys).
func splitBase(base *Transaction, remove []string, newKeys map[string]bool) baseSplit {
	var out baseSplit
	used := make([]bool, len(remove))
	if base != nil {
		for _, in := range base.Inputs {
			removed := false
			for j, arg := range remove {
				if matchesInput(arg, in) {
					used[j], removed = true, true
				}
			}
			switch {
			case removed:
				out.removed = append(out.removed, in)
			case newKeys[in.Key()]:
				out.replaced = append(out.replaced, in)
			default:
				out.kept = append(out.kept, in)
			}
		}
	}
	for j, ok := range used {
		if !ok {
			out.unused = append(out.unused, remove[j])
		}
	}
	return out
}

type pendingFragment struct {
	data     []byte // the encoded dump (written when it cannot be linked; nil: read linkFrom)
	linkFrom string // path of the base transaction's fragment
	digest   string // the fragment's SHA-256 (hex)
	// nodes: the input gets a node file, linked from nodesFrom (the
	// base's) or made from the fragment's text.
	nodes     bool
	nodesFrom string
}

// Compose builds a new transaction from a base transaction's inputs and new
// inputs, and publishes it. Conflicts are detected before anything is
// written. The caller should hold Lock (shared) from the moment it started
// putting the new inputs' objects into the store; Compose takes it too.
func (s *State) Compose(opts ComposeOptions) (*ComposeResult, error) {
	lk, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()

	if opts.ID == 0 {
		if mossRoot, err := s.FollowsMoss(); err != nil {
			return nil, err
		} else if mossRoot != "" {
			return nil, fmt.Errorf("compose: %s follows the moss installation %s, whose state ids are its transaction ids: give the new transaction an id (--id)", s.root, mossRoot)
		}
	} else if _, err := s.Get(opts.ID); err == nil {
		return nil, fmt.Errorf("compose: transaction %d already exists", opts.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}

	res := &ComposeResult{}
	var base *Transaction
	if opts.From != 0 {
		if base, err = s.Get(opts.From); err != nil {
			return nil, fmt.Errorf("compose --from: %w", err)
		}
	}

	// Which base inputs stay.
	newKeys := map[string]bool{}
	for _, f := range opts.Add {
		if newKeys[f.Input.Key()] {
			return nil, fmt.Errorf("compose: input %s given twice", f.Input.Label())
		}
		newKeys[f.Input.Key()] = true
	}
	split := splitBase(base, opts.Remove, newKeys)
	kept := split.kept
	res.Removed, res.Replaced = split.removed, split.replaced
	if len(split.unused) > 0 {
		return nil, fmt.Errorf("compose --remove %s: no such input in transaction %d", split.unused[0], opts.From)
	}
	// New inputs: encode before merging (Merge moves their nodes). Only
	// their objects need checking: those of the base's inputs are
	// referenced by the base's image, which gc keeps (and gc cannot run
	// while we hold the lock).
	var added []Fragment
	var addedPending []pendingFragment
	for _, f := range opts.Add {
		if f.Root == nil {
			return nil, fmt.Errorf("compose: input %s has no tree", f.Input.Label())
		}
		if err := s.checkObjects(f.Root); err != nil {
			return nil, fmt.Errorf("compose: input %s: %w", f.Input.Label(), err)
		}
		f.Root.Sort()
		data, err := EncodeFragment(f.Root)
		if err != nil {
			return nil, fmt.Errorf("compose: input %s: %w", f.Input.Label(), err)
		}
		f.Input.Fragment, f.Input.Digest = fragmentName(data)
		c := CountTree(f.Root)
		f.Input.Entries, f.Input.Bytes = c.Entries-1, c.Bytes
		added = append(added, f)
		addedPending = append(addedPending, pendingFragment{data: data, digest: f.Input.Digest, nodes: true})
	}
	// A compose that would hold what the base holds creates nothing
	// (decided before the base's fragments are read).
	if base != nil && !opts.Force && !opts.Triggers.Rerun && len(res.Removed) == 0 && len(res.Replaced) == len(added) {
		same := true
		for _, f := range added {
			i := slices.IndexFunc(res.Replaced, func(in Input) bool { return in.Key() == f.Input.Key() })
			if i < 0 || !sameInput(f.Input, res.Replaced[i]) {
				same = false
				break
			}
		}
		if same {
			res.Tx, res.Replaced, res.Unchanged = base, nil, true
			return res, nil
		}
	}
	var frags []Fragment
	var pending []pendingFragment
	if len(kept) > 0 {
		data, roots, err := s.loadFragments(base, kept, true)
		if err != nil {
			return nil, fmt.Errorf("compose --from: %w", err)
		}
		for i, in := range kept {
			frags = append(frags, Fragment{Input: in, Root: roots[i]})
			p := pendingFragment{data: data[i], linkFrom: s.FragmentPath(base, in), digest: in.Digest, nodes: true}
			if data[i] == nil { // loaded from its node file
				p.nodesFrom = s.NodesPath(base, in)
			}
			pending = append(pending, p)
		}
	}
	frags = append(frags, added...)
	pending = append(pending, addedPending...)
	inputs := make([]Input, len(frags))
	for i, f := range frags {
		inputs[i] = f.Input
	}

	root, err := Merge(frags)
	if err != nil {
		return nil, err
	}
	when := opts.Time
	if when.IsZero() {
		when = time.Now()
	}
	when = when.UTC().Truncate(time.Second)
	// The one trigger step: run the tree's transaction triggers and fold
	// their outputs into it (objects go into the store, nothing else is
	// written before the transaction's own files below).
	trig, err := s.applyTriggers(root, base, when, opts.Triggers)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}

	// Nothing is written before this point.
	txl, err := s.txLock()
	if err != nil {
		return nil, err
	}
	// When no object is new (no new input, or new inputs whose contents
	// were all inline or in the store and synced: no ingest batch of anyone
	// is pending) and the triggers stored none, nothing but our own few
	// files is new: fsync them instead of syncing the whole file system
	// (which waits for every other writer's data too). Otherwise one syncfs
	// covers the new objects as well.
	targeted := !trig.stored && (len(opts.Add) == 0 || !s.store.Unsynced())
	var id uint64
	if opts.ID != 0 {
		id, err = s.reserveID(opts.ID, targeted)
	} else {
		id, err = s.allocateID(targeted)
	}
	txl.Unlock()
	if err != nil {
		return nil, err
	}
	crash(CPComposeAlloc)

	idText := []byte(strconv.FormatUint(id, 10))
	root.AddChild(&tree.Node{Name: StateIDName, Mode: tree.TypeReg | 0o644, Nlink: 1,
		Size: uint64(len(idText)), Content: idText, Mtime: tree.Timespec{Sec: when.Unix()}})
	root.SortChildren()

	// The fragments are written beside the image writer.
	inputsDone := make(chan error, 1)
	go func() {
		err := s.writeInputs(id, append(slices.Clip(inputs), trig.fragmentInputs()...), append(slices.Clip(pending), trig.pending...), targeted)
		if err == nil {
			crash(CPComposeInputs)
		}
		inputsDone <- err
	}()

	counts := make(chan Counts, 1)
	go func() { counts <- CountTree(root) }() // beside the writer: both only read
	imageHex, imageSize, err := s.streamImage(root, targeted)
	tx := &Transaction{ID: id, Time: when, Inputs: inputs, Triggers: trig.records, Counts: <-counts, Moss: opts.Moss}
	if ierr := <-inputsDone; err == nil {
		err = ierr
	}
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	crash(CPComposeImage)

	tx.Image = imageHex
	if base != nil {
		tx.Parent = base.ID
	}
	tx.Counts.Image = imageSize
	// The objects, the image, the fragments and the counter are durable
	// before the metadata that refers to them appears.
	if targeted {
		err = fsyncDir(s.txDir()) // the counter and <id>.inputs renames
	} else {
		err = s.Sync() // one syncfs
	}
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	crash(CPComposeSynced)
	if err := s.publish(tx); err != nil {
		return nil, err
	}
	res.Tx = tx
	return res, nil
}

// streamImage writes the image of root into a temporary file under
// images/ while its fs-verity digest is computed, and names it by the
// digest. The image is never whole in memory (erofs.WriteImage streams it
// through a small window): no image-sized buffer to fault in, no copy of
// it.
func (s *State) streamImage(root *tree.Node, durable bool) (string, int64, error) {
	f, err := os.CreateTemp(s.ImagesDir(), ".tmp-image-")
	if err != nil {
		return "", 0, fmt.Errorf("writing image: %w", err)
	}
	h := fsverity.New()
	err = erofs.WriteImage(io.MultiWriter(f, h), root, erofs.DefaultWriteOptions())
	if err != nil {
		err = fmt.Errorf("building image: %w", err)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	err = errors.Join(err, f.Chmod(PrivateFileMode), f.Close())
	d := h.Sum()
	imageHex := hex.EncodeToString(d[:])
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(s.ImagesDir(), imageHex))
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, fmt.Errorf("writing image: %w", err)
	}
	if durable {
		if err := fsyncDir(s.ImagesDir()); err != nil {
			return "", 0, err
		}
	}
	return imageHex, int64(h.Size64()), nil
}

// writeImage stores an image under images/<fs-verity digest>, the digest
// computed while the bytes are written to a temporary file.
func (s *State) writeImage(img []byte, durable bool) (string, error) {
	digest := make(chan [32]byte, 1)
	go func() { digest <- fsverity.Sum(img) }()
	f, err := os.CreateTemp(s.ImagesDir(), ".tmp-image-")
	if err != nil {
		<-digest
		return "", err
	}
	_, err = f.Write(img)
	if err == nil && durable {
		err = f.Sync()
	}
	err = errors.Join(err, f.Chmod(PrivateFileMode), f.Close())
	d := <-digest
	imageHex := hex.EncodeToString(d[:])
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(s.ImagesDir(), imageHex))
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("writing image: %w", err)
	}
	if durable {
		if err := fsyncDir(s.ImagesDir()); err != nil {
			return "", err
		}
	}
	return imageHex, nil
}

// checkObjects makes sure every external file's object is in the store.
func (s *State) checkObjects(root *tree.Node) error {
	var missing []string
	n := 0
	_ = root.Walk(func(x *tree.Node) error {
		if x.LinkTo == nil && x.Payload != "" {
			if _, err := os.Lstat(filepath.Join(s.store.ObjectsDir(), x.Payload)); err != nil {
				n++
				if len(missing) < 5 {
					missing = append(missing, x.Path()+" ("+x.Payload+")")
				}
			}
		}
		return nil
	})
	if n > 0 {
		return fmt.Errorf("compose: %d object(s) missing from the store, e.g. %v", n, missing)
	}
	return nil
}

// writeInputs writes the fragments of transaction id into a temporary
// directory and renames it to <id>.inputs. Fragments carried over from the
// base are hardlinked (they are immutable and named by their digest).
func (s *State) writeInputs(id uint64, inputs []Input, pending []pendingFragment, durable bool) error {
	tmp, err := os.MkdirTemp(s.txDir(), ".tmp-inputs-")
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	for i, in := range inputs {
		if err := writeInput(tmp, in, pending[i], durable); err != nil {
			return fmt.Errorf("compose: input %s: %w", in.Label(), err)
		}
	}
	if durable {
		if err := fsyncDir(tmp); err != nil {
			return fmt.Errorf("compose: %w", err)
		}
	}
	// Fragments list every path of the input: private (MkdirTemp made
	// the directory 0700; say so rather than rely on it).
	if err := os.Chmod(tmp, PrivateDirMode); err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	if err := os.Rename(tmp, s.inputsDir(id)); err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	ok = true
	return nil
}

// writeInput writes one input's fragment, and its node file if it gets
// one, into the inputs directory dir.
func writeInput(dir string, in Input, p pendingFragment, durable bool) error {
	dst := filepath.Join(dir, in.Fragment)
	if _, err := os.Lstat(dst); err == nil {
		return nil // two inputs with the same fragment
	}
	if p.linkFrom == "" || os.Link(p.linkFrom, dst) != nil {
		if p.data == nil {
			data, err := os.ReadFile(p.linkFrom)
			if err != nil {
				return err
			}
			if _, d := fragmentName(data); d != p.digest {
				return fmt.Errorf("fragment %s has SHA-256 %s, metadata says %s", p.linkFrom, d, p.digest)
			}
			p.data = data
		}
		if err := writeFragmentFile(dst, p.data, durable); err != nil {
			return fmt.Errorf("writing fragment: %w", err)
		}
	}
	if !p.nodes {
		return nil
	}
	nodesDst := filepath.Join(dir, p.digest+nodesSuffix)
	if p.nodesFrom != "" && os.Link(p.nodesFrom, nodesDst) == nil {
		return nil
	}
	if p.data == nil {
		data, err := os.ReadFile(dst)
		if err != nil {
			return err
		}
		p.data = data
	}
	nodes, err := encodeNodes(p.data, p.digest, dst)
	if err != nil {
		return fmt.Errorf("node file: %w", err)
	}
	if err := writeFragmentFile(nodesDst, nodes, durable); err != nil {
		return fmt.Errorf("writing node file: %w", err)
	}
	return nil
}

func writeFragmentFile(path string, data []byte, durable bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// publish renames the metadata into place: from now on the transaction exists.
func (s *State) publish(tx *Transaction) error {
	data, err := json.MarshalIndent(tx, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	l, err := s.txLock()
	if err != nil {
		return err
	}
	defer l.Unlock()
	dst := s.metaPath(tx.ID)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("compose: %s already exists", dst)
	}
	f, err := os.CreateTemp(s.txDir(), ".tmp-meta-")
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(0o644), f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("compose: writing metadata: %w", err)
	}
	crash(CPComposeMetaTemp)
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("compose: publishing %s: %w", dst, err)
	}
	crash(CPComposePublish)
	return fsyncDir(s.txDir())
}

// Tree returns the image tree of a transaction, read back from its image.
func (s *State) Tree(tx *Transaction) (*tree.Node, error) {
	root, err := readImageTree(s.ImagePath(tx))
	if err != nil {
		return nil, fmt.Errorf("transaction %d: %w", tx.ID, err)
	}
	root.Sort()
	return root, nil
}

// DiffTx compares two transactions: inputs and image trees.
func (s *State) DiffTx(a, b uint64) (*Diff, error) {
	ta, err := s.Get(a)
	if err != nil {
		return nil, err
	}
	tb, err := s.Get(b)
	if err != nil {
		return nil, err
	}
	d := &Diff{A: a, B: b}
	DiffInputs(ta.Inputs, tb.Inputs, d)
	DiffTriggers(ta.Triggers, tb.Triggers, d)
	ra, err := s.Tree(ta)
	if err != nil {
		return nil, err
	}
	rb, err := s.Tree(tb)
	if err != nil {
		return nil, err
	}
	DiffTrees(ra, rb, d)
	slices.Sort(d.Added)
	slices.Sort(d.Removed)
	return d, nil
}
