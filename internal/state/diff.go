package state

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// Diff is the difference between two transactions.
type Diff struct {
	A uint64 `json:"a"`
	B uint64 `json:"b"`
	// Packages (inputs) added, removed and changed (other version or content).
	InputsAdded   []InputChange `json:"inputs_added"`
	InputsRemoved []InputChange `json:"inputs_removed"`
	InputsChanged []InputChange `json:"inputs_changed"`
	// Paths added, removed and changed; .stateID is left out.
	Added   []string     `json:"added"`
	Removed []string     `json:"removed"`
	Changed []PathChange `json:"changed"`
	// Triggers: what B's transaction triggers did compared with A's.
	Triggers []TriggerChange `json:"triggers,omitempty"`
}

// TriggerChange is one transaction trigger in a diff: its status in B
// ("ran", "carried over", "new", or "gone" when only A had it) and the
// paths it writes (and removes) in B.
type TriggerChange struct {
	Name    string   `json:"name"`
	Status  string   `json:"status"`
	Paths   []string `json:"paths,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// DiffTriggers compares two transactions' trigger records.
func DiffTriggers(a, b []TriggerRecord, d *Diff) {
	inA := map[string]bool{}
	for _, r := range a {
		inA[r.Name] = true
	}
	inB := map[string]bool{}
	for _, r := range b {
		inB[r.Name] = true
		st := "ran"
		switch {
		case !r.Ran:
			st = "carried over"
		case !inA[r.Name]:
			st = "new, ran"
		}
		d.Triggers = append(d.Triggers, TriggerChange{Name: r.Name, Status: st, Paths: r.Paths, Removed: r.Removed})
	}
	for _, r := range a {
		if !inB[r.Name] {
			d.Triggers = append(d.Triggers, TriggerChange{Name: r.Name, Status: "gone"})
		}
	}
}

// InputChange names an input in a diff.
type InputChange struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Prefix  string `json:"prefix,omitempty"`
	Version string `json:"version,omitempty"`
	// OldVersion is set for a changed package.
	OldVersion string `json:"old_version,omitempty"`
}

// PathChange is one changed path and what changed.
type PathChange struct {
	Path string `json:"path"`
	What string `json:"what"`
}

// DiffInputs compares two transactions' inputs by key.
func DiffInputs(a, b []Input, d *Diff) {
	ai := map[string]Input{}
	for _, in := range a {
		ai[in.Key()] = in
	}
	bi := map[string]bool{}
	for _, in := range b {
		bi[in.Key()] = true
		old, ok := ai[in.Key()]
		ch := InputChange{Kind: in.Kind, Name: in.Name, Prefix: in.Prefix, Version: in.Version}
		switch {
		case !ok:
			d.InputsAdded = append(d.InputsAdded, ch)
		case old.Version != in.Version || old.Digest != in.Digest:
			ch.OldVersion = old.Version
			d.InputsChanged = append(d.InputsChanged, ch)
		}
	}
	for _, in := range a {
		if !bi[in.Key()] {
			d.InputsRemoved = append(d.InputsRemoved, InputChange{Kind: in.Kind, Name: in.Name, Prefix: in.Prefix, Version: in.Version})
		}
	}
}

// DiffTrees compares two image trees path by path (children must be
// sorted) and appends to d. Directories compare by metadata only.
func DiffTrees(a, b *tree.Node, d *Diff) {
	diffDir(a, b, d)
}

func diffDir(a, b *tree.Node, d *Diff) {
	x, y := 0, 0
	for x < len(a.Children) || y < len(b.Children) {
		var cmp int
		switch {
		case x == len(a.Children):
			cmp = 1
		case y == len(b.Children):
			cmp = -1
		default:
			cmp = strings.Compare(a.Children[x].Name, b.Children[y].Name)
		}
		switch {
		case cmp < 0:
			collect(a.Children[x], a.Parent == nil, &d.Removed)
			x++
		case cmp > 0:
			collect(b.Children[y], b.Parent == nil, &d.Added)
			y++
		default:
			ea, eb := a.Children[x], b.Children[y]
			x++
			y++
			if ea.Parent != nil && ea.Parent.Parent == nil && ea.Name == StateIDName {
				continue
			}
			if why := metaDiff(ea, eb); why != "" {
				d.Changed = append(d.Changed, PathChange{Path: ea.Path(), What: why})
			}
			aDir, bDir := ea.LinkTo == nil && ea.IsDir(), eb.LinkTo == nil && eb.IsDir()
			switch {
			case aDir && bDir:
				diffDir(ea, eb, d)
			case aDir:
				collectChildren(ea, &d.Removed)
			case bDir:
				collectChildren(eb, &d.Added)
			}
		}
	}
}

// collect appends n's path and, for a directory, all paths below it.
func collect(n *tree.Node, atRoot bool, out *[]string) {
	if atRoot && n.Name == StateIDName {
		return
	}
	_ = n.Walk(func(c *tree.Node) error {
		*out = append(*out, c.Path())
		return nil
	})
}

func collectChildren(n *tree.Node, out *[]string) {
	for _, c := range n.Children {
		collect(c, false, out)
	}
}

// metaDiff describes how two entries at the same path differ ("" if not).
func metaDiff(a, b *tree.Node) string {
	if (a.LinkTo == nil) != (b.LinkTo == nil) || (a.LinkTo != nil && a.LinkTo.Path() != b.LinkTo.Path()) {
		if a.LinkTo != nil && b.LinkTo != nil {
			return "hardlink target"
		}
		return "hardlink"
	}
	ia, ib := a.Inode(), b.Inode()
	if ia.Mode&tree.TypeMask != tree.TypeDir || ib.Mode&tree.TypeMask != tree.TypeDir {
		if why := entryDiff(ia, ib); why != "" {
			return why
		}
	} else {
		switch {
		case ia.Mode != ib.Mode:
			return fmt.Sprintf("mode %o vs %o", ia.Mode&0o7777, ib.Mode&0o7777)
		case ia.UID != ib.UID || ia.GID != ib.GID:
			return fmt.Sprintf("owner %d:%d vs %d:%d", ia.UID, ia.GID, ib.UID, ib.GID)
		case !sameXattrs(ia.Xattrs, ib.Xattrs):
			return "xattrs"
		}
	}
	if ia.Mtime != ib.Mtime {
		return "mtime"
	}
	if ia.Mode&tree.TypeMask == tree.TypeReg && !bytes.Equal(ia.Digest, ib.Digest) {
		return "content"
	}
	return ""
}
