package adopt

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/internal/mossdb"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/tree"
)

// Row is one layout row of a state, with the index of its package in the
// state's selection.
type Row struct {
	mossdb.Entry
	Pkg int
}

// Blit is the /usr tree of a moss state as moss's blit lays it out, before
// contents are known: regular files carry their XXH3-128 in Want.
type Blit struct {
	Root *tree.Node
	// Owner is the index of the package that provided a node (in the
	// selection); implicit directories have none.
	Owner map[*tree.Node]int
	// Want is the XXH3-128 of each non-empty regular file.
	Want map[*tree.Node]stone.XXH128
	// Nodes maps paths relative to /usr ("" is the root) to nodes.
	Nodes map[string]*tree.Node
	// Warnings: duplicate paths, dropped entries.
	Warnings []string
}

// vnode is a node of the blit's working tree, keyed by absolute path
// ("/usr/…") as moss's vfs does.
type vnode struct {
	path     string
	row      *Row // nil: implicit directory
	dir      bool
	children []*vnode
	parent   *vnode
}

func depth(p string) int { return strings.Count(p, "/") }

func byDepthThenPath(a, b string) int {
	if c := cmp.Compare(depth(a), depth(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func parentOf(p string) string {
	d := path.Dir(p)
	return d
}

// BuildBlit lays out rows (in selection order, then layout.id) as moss's
// blit does:
//
//   - every path is /usr/<row path>; entries are taken by depth, then path,
//     and for one path the first row wins: later ones are dropped with a
//     warning naming both packages;
//   - parent directories no row names are implicit: root:root 0755;
//   - a symlink whose target (absolute, or joined to the symlink's
//     directory as it is, without resolving "..") names a directory of the
//     tree has the entries below its path re-parented under that directory
//     (lib64 -> lib); an entry already there wins;
//   - entries below a path that is not a directory are dropped (warning);
//   - devices, fifos, sockets and unknown entries are left out, as moss's
//     blit skips them.
//
// Unlike a hardlink blit, each path keeps its row's mode and owner.
func BuildBlit(rows []Row, pkgName func(int) string) (*Blit, error) {
	b := &Blit{Owner: map[*tree.Node]int{}, Want: map[*tree.Node]stone.XXH128{}, Nodes: map[string]*tree.Node{}}
	warn := func(format string, args ...any) { b.Warnings = append(b.Warnings, fmt.Sprintf(format, args...)) }

	type item struct {
		abs string
		row *Row
	}
	var items []item
	for i := range rows {
		r := &rows[i]
		switch r.Type {
		case mossdb.Regular, mossdb.Symlink, mossdb.Directory:
			items = append(items, item{"/usr/" + r.Path, r})
		default:
			warn("/usr/%s (%s): %s entry left out, as moss's blit does", r.Path, pkgName(r.Pkg), r.Type)
		}
	}
	// Stable: rows of one path keep their selection / layout.id order.
	slices.SortStableFunc(items, func(a, b item) int { return byDepthThenPath(a.abs, b.abs) })

	nodes := map[string]*vnode{"/": {path: "/", dir: true}}
	var ensureDir func(p string) *vnode
	// ensureDir returns the node at p, making implicit directories.
	ensureDir = func(p string) *vnode {
		if n := nodes[p]; n != nil {
			return n
		}
		par := ensureDir(parentOf(p))
		n := &vnode{path: p, dir: true, parent: par}
		par.children = append(par.children, n)
		nodes[p] = n
		return n
	}
	for _, it := range items {
		if old := nodes[it.abs]; old != nil {
			if old.row == nil && it.row.Type == mossdb.Directory {
				// A directory made implicitly for a deeper entry cannot
				// come first (entries go by depth); this is the root.
				old.row = it.row
				continue
			}
			if old.row != nil {
				warn("%s: %s of %s is a duplicate; %s of %s wins", it.abs, it.row.Type, pkgName(it.row.Pkg), old.row.Type, pkgName(old.row.Pkg))
			} else {
				warn("%s: %s of %s is a duplicate of an implicit directory", it.abs, it.row.Type, pkgName(it.row.Pkg))
			}
			continue
		}
		par := ensureDir(parentOf(it.abs))
		n := &vnode{path: it.abs, row: it.row, dir: it.row.Type == mossdb.Directory, parent: par}
		par.children = append(par.children, n)
		nodes[it.abs] = n
	}

	// Symlinks to directories: re-parent what lies below them.
	type redirect struct{ from, to string }
	var redirects []redirect
	for p, n := range nodes {
		if n.row == nil || n.row.Type != mossdb.Symlink {
			continue
		}
		t := n.row.Target
		if !strings.HasPrefix(t, "/") {
			t = parentOf(p) + "/" + t
			if parentOf(p) == "/" {
				t = "/" + n.row.Target
			}
		}
		if d := nodes[t]; d != nil && d.dir && t != p {
			redirects = append(redirects, redirect{p, t})
		}
	}
	slices.SortFunc(redirects, func(a, b redirect) int { return strings.Compare(a.from, b.from) })
	for _, r := range redirects {
		src := nodes[r.from]
		if src == nil || len(src.children) == 0 {
			continue
		}
		var moved []*vnode
		var walk func(n *vnode)
		walk = func(n *vnode) {
			for _, c := range n.children {
				moved = append(moved, c)
				walk(c)
			}
		}
		walk(src)
		src.children = nil
		for _, m := range moved {
			delete(nodes, m.path)
		}
		for _, m := range moved {
			np := r.to + strings.TrimPrefix(m.path, r.from)
			if old := nodes[np]; old != nil {
				if !(old.dir && m.dir) {
					warn("%s: re-parented from %s (symlink to %s); the entry already there wins", np, m.path, r.to)
				}
				continue
			}
			par := nodes[parentOf(np)]
			if par == nil {
				continue // below an entry that was not kept
			}
			n := &vnode{path: np, row: m.row, dir: m.dir, parent: par}
			par.children = append(par.children, n)
			nodes[np] = n
		}
	}

	usr := nodes["/usr"]
	if usr == nil {
		usr = &vnode{path: "/usr", dir: true}
	}
	if usr.row != nil && usr.row.Type != mossdb.Directory {
		return nil, fmt.Errorf("layout: /usr itself is a %s", usr.row.Type)
	}
	var build func(v *vnode, rel string) *tree.Node
	build = func(v *vnode, rel string) *tree.Node {
		var n *tree.Node
		switch {
		case v.row == nil:
			n = tree.NewDir(path.Base(v.path), 0o755)
		case v.row.Type == mossdb.Directory:
			n = tree.NewDir(path.Base(v.path), v.row.Mode&0o7777)
		case v.row.Type == mossdb.Regular:
			n = &tree.Node{Name: path.Base(v.path), Mode: tree.TypeReg | v.row.Mode&0o7777, Nlink: 1}
			if v.row.Digest != stone.EmptyXXH128 {
				b.Want[n] = v.row.Digest
			}
		case v.row.Type == mossdb.Symlink:
			n = &tree.Node{Name: path.Base(v.path), Mode: tree.TypeLink | v.row.Mode&0o7777, Nlink: 1, Target: v.row.Target, Size: uint64(len(v.row.Target))}
		}
		if v.row != nil {
			n.UID, n.GID = v.row.UID, v.row.GID
			b.Owner[n] = v.row.Pkg
		}
		b.Nodes[rel] = n
		if !v.dir {
			for _, c := range v.children {
				warn("%s: left out, %s is a %s, not a directory", c.path, v.path, v.row.Type)
			}
			return n
		}
		for _, c := range v.children {
			cr := path.Base(c.path)
			if rel != "" {
				cr = rel + "/" + cr
			}
			n.AddChild(build(c, cr))
		}
		return n
	}
	b.Root = build(usr, "")
	b.Root.Name = ""
	b.Root.Sort()
	setNlinks(b.Root)
	return b, nil
}

// setNlinks gives directories 2 + their subdirectories as link count.
func setNlinks(root *tree.Node) {
	_ = root.Walk(func(n *tree.Node) error {
		if n.IsDir() {
			n.Nlink = 2
			for _, c := range n.Children {
				if c.IsDir() {
					n.Nlink++
				}
			}
		}
		return nil
	})
}
