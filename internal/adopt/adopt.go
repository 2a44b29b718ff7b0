// Package adopt turns the states of a moss installation into mossfs
// transactions: for each state, the packages state_selections names, laid
// out from their db/layout rows as moss's blit lays them out (BuildBlit),
// with contents taken from moss's assets/v2 (checked against their XXH3-128
// as they enter the store, reflinked where the file system allows, never
// hardlinked) and the files moss or its transaction triggers wrote into the
// archived tree (.moss/root/<id>/usr) that no row names. The state's
// transaction triggers then run as in any compose, their output folded in.
// The transaction keeps moss's state id, and its inputs are the packages.
package adopt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/mossdb"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/tree"
)

// Options tune an adoption.
type Options struct {
	// Waiting is called when a moss client holds moss's lock, before
	// waiting for it.
	Waiting func()
	// Progress, if set, is called as contents are stored.
	Progress func(files int, bytes int64)
	// NoExtras leaves out the files of moss's archived tree.
	NoExtras bool
	// Triggers: the state's transaction triggers (its
	// usr/share/moss/triggers/tx.d) run as in compose, over the tree
	// with the archived tree's files, their output folded into the image.
	Triggers state.TriggerOptions
}

// Result describes the adoption of one state.
type Result struct {
	State uint64 `json:"state"`
	// Unchanged: the transaction already existed with the same selection;
	// nothing was done.
	Unchanged bool               `json:"unchanged"`
	Tx        *state.Transaction `json:"transaction"`
	Transfer  Transfer           `json:"transfer"`
	// ExtrasFrom is the archived tree the extras come from ("" if none).
	ExtrasFrom string   `json:"extras_from,omitempty"`
	Extras     []Extra  `json:"extras,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// Install is an opened moss installation with moss's lock held shared.
type Install struct {
	*mossdb.Install
}

// Open opens the moss installation at root (see mossdb.Open).
func Open(root string, waiting func()) (*Install, error) {
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	in, err := mossdb.Open(root, waiting)
	if err != nil {
		return nil, err
	}
	return &Install{in}, nil
}

// SelectionDigest identifies a state's selection: the SHA-256 of its
// package ids in order.
func SelectionDigest(sel []mossdb.Selection) string {
	h := sha256.New()
	for _, s := range sel {
		h.Write([]byte(s.PackageID))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ArchivedTree returns the tree moss keeps for state id: the archived
// .moss/root/<id>/usr, or the live /usr or the staging tree
// (.moss/root/staging/usr, where a promotion that failed leaves it) when
// its .stateID says id. "" if none.
func ArchivedTree(root string, id uint64) string {
	dir := filepath.Join(root, mossdb.ArchiveDir, strconv.FormatUint(id, 10), "usr")
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	for _, d := range []string{filepath.Join(root, "usr"), filepath.Join(root, mossdb.ArchiveDir, "staging", "usr")} {
		if data, err := os.ReadFile(filepath.Join(d, state.StateIDName)); err == nil && strings.TrimSpace(string(data)) == strconv.FormatUint(id, 10) {
			return d
		}
	}
	return ""
}

// State adopts moss state id into s as transaction id. The caller holds
// s.Lock (shared) from before the first content is stored until it
// returns; nothing is published unless everything succeeded.
func (in *Install) State(ctx context.Context, s *state.State, id uint64, opts Options) (*Result, error) {
	res := &Result{State: id}
	sel, err := in.Selections(ctx, id)
	if err != nil {
		return nil, err
	}
	digest := SelectionDigest(sel)
	if tx, err := s.Get(id); err == nil {
		if tx.Moss != nil && tx.Moss.Selection == digest {
			res.Unchanged, res.Tx = true, tx
			return res, nil
		}
		if tx.Moss == nil {
			return nil, fmt.Errorf("adopt moss state %d: transaction %d exists and was not adopted from moss (remove it, or adopt into another state root)", id, id)
		}
		return nil, fmt.Errorf("adopt moss state %d: transaction %d was adopted from a different selection of packages (%s); moss never reuses a state id, so this state root follows another installation", id, id, tx.Moss.Root)
	} else if !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}

	ids := make([]string, len(sel))
	for i, x := range sel {
		ids[i] = x.PackageID
	}
	pkgs, err := in.Packages(ctx, ids)
	if err != nil {
		return nil, err
	}
	layout, err := in.Layout(ctx, ids)
	if err != nil {
		return nil, err
	}
	var rows []Row
	for i, pid := range ids {
		for _, e := range layout[pid] {
			rows = append(rows, Row{Entry: e, Pkg: i})
		}
	}
	name := func(i int) string {
		p := pkgs[ids[i]]
		return p.Name + "-" + p.Version + "-" + strconv.FormatUint(p.Release, 10)
	}
	b, err := BuildBlit(rows, name)
	if err != nil {
		return nil, fmt.Errorf("adopt moss state %d: %w", id, err)
	}
	res.Warnings = b.Warnings

	// Contents.
	want := map[stone.XXH128]string{}
	for n, x := range b.Want {
		if _, ok := want[x]; !ok {
			want[x] = n.Path()[1:]
		}
	}
	known, err := stone.NewKnownIndex(s.KnownContentPath())
	if err != nil {
		return nil, err
	}
	defer known.Close()
	assets, err := os.OpenRoot(mossdb.AssetsPath(in.Root))
	if err != nil {
		return nil, fmt.Errorf("moss assets: %w", err)
	}
	defer assets.Close()
	got, tr, err := importContents(ctx, s.Store(), s.IndexAdd, known, assets, want, opts.Progress)
	res.Transfer = tr
	if err != nil {
		return res, fmt.Errorf("adopt moss state %d: %w", id, err)
	}
	for n, x := range b.Want {
		c := got[x]
		n.Size, n.Digest, n.Payload = uint64(c.Size), c.Digest[:], cas.Payload(c.Digest)
	}

	extrasOwner := len(sel)
	if !opts.NoExtras {
		if dir := ArchivedTree(in.Root, id); dir != "" {
			res.ExtrasFrom = dir
			res.Extras, err = addExtras(b, dir, extrasOwner, s, &res.Transfer)
			if err != nil {
				return res, fmt.Errorf("adopt moss state %d: %w", id, err)
			}
		}
	}

	// One input per package, one for the extras.
	inputs := make([]state.Input, len(sel)+1)
	for i, pid := range ids {
		p := pkgs[pid]
		inputs[i] = state.Input{Kind: state.KindStone, Name: p.Name,
			Version: fmt.Sprintf("%s-%d-%d", p.Version, p.Release, p.BuildRelease),
			Source:  filepath.Join(in.Root, mossdb.InstallDB), Package: pid, Provides: p.Providers}
	}
	inputs[extrasOwner] = state.Input{Kind: state.KindTree, Name: res.ExtrasFrom, Prefix: "/", Source: res.ExtrasFrom}
	frags := Split(b, inputs)
	if res.ExtrasFrom == "" || len(res.Extras) == 0 {
		frags = frags[:extrasOwner]
	}
	if err := known.Sync(); err != nil {
		return res, err
	}
	mossState, err := in.stateRow(ctx, id)
	if err != nil {
		return res, err
	}
	cres, err := s.Compose(state.ComposeOptions{ID: id, Add: frags, Time: mossState.Created, Triggers: opts.Triggers,
		Moss: &state.MossOrigin{Root: in.Root, State: id, Selection: digest, Extras: res.ExtrasFrom}})
	if err != nil {
		return res, fmt.Errorf("adopt moss state %d: %w", id, err)
	}
	res.Tx = cres.Tx
	if err := s.SetFollowsMoss(in.Root); err != nil {
		return res, err
	}
	return res, nil
}

func (in *Install) stateRow(ctx context.Context, id uint64) (mossdb.State, error) {
	states, err := in.States(ctx)
	if err != nil {
		return mossdb.State{}, err
	}
	for _, st := range states {
		if st.ID == id {
			return st, nil
		}
	}
	return mossdb.State{}, fmt.Errorf("moss state %d: %w", id, mossdb.ErrNoState)
}

// Split divides the blit's tree into one fragment per input: each holds
// the entries its input provided, under copies of their parent
// directories (with the tree's metadata, so that merging the fragments
// gives the tree back). A directory nobody provided and nothing lies in
// goes to the first fragment.
func Split(b *Blit, inputs []state.Input) []state.Fragment {
	frags := make([]state.Fragment, len(inputs))
	for i := range frags {
		frags[i] = state.Fragment{Input: inputs[i], Root: copyDir(b.Root)}
	}
	// dirIn returns the copy of directory d in fragment i.
	copies := make([]map[*tree.Node]*tree.Node, len(inputs))
	var dirIn func(i int, d *tree.Node) *tree.Node
	dirIn = func(i int, d *tree.Node) *tree.Node {
		if d.Parent == nil {
			return frags[i].Root
		}
		if copies[i] == nil {
			copies[i] = map[*tree.Node]*tree.Node{}
		}
		if c := copies[i][d]; c != nil {
			return c
		}
		c := copyDir(d)
		dirIn(i, d.Parent).AddChild(c)
		copies[i][d] = c
		return c
	}
	_ = b.Root.Walk(func(n *tree.Node) error {
		if n.Parent == nil {
			return nil
		}
		i, ok := b.Owner[n]
		if !ok {
			if !n.IsDir() || len(n.Children) > 0 {
				return nil // an implicit directory: copied where needed
			}
			i = 0
		}
		if n.IsDir() {
			dirIn(i, n)
			return nil
		}
		c := *n
		c.Parent, c.Children = nil, nil
		dirIn(i, n.Parent).AddChild(&c)
		return nil
	})
	for _, f := range frags {
		f.Root.Sort()
		setNlinks(f.Root)
	}
	return frags
}

func copyDir(d *tree.Node) *tree.Node {
	return &tree.Node{Name: d.Name, Mode: d.Mode, UID: d.UID, GID: d.GID, Nlink: 2, Mtime: d.Mtime}
}
