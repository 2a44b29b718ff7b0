package adopt

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"syscall"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// OSRelease is the file moss writes into every state after the blit; the
// archived tree's copy replaces any package's.
const OSRelease = "lib/os-release"

// Extra is a file of moss's archived tree that no layout row names:
// written by moss (os-release, system-model.kdl) or by transaction triggers
// (caches such as modules.dep).
type Extra struct {
	Path string `json:"path"` // relative to /usr
	Type string `json:"type"`
	Size int64  `json:"size,omitempty"`
}

// addExtras walks dir (an archived /usr of moss, opened as an os.Root so
// nothing outside it is read) and adds to b every entry no layout row
// names, owned by owner, with its mode and owner as on disk (mtime 0, as
// for packages); lib/os-release replaces a package's. Directories of the
// blit are entered, other entries of the blit are kept as they are.
// Contents go into the store (reflinked where possible).
func addExtras(b *Blit, dir string, owner int, s *state.State, tr *Transfer) ([]Extra, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("moss archived tree: %w", err)
	}
	defer root.Close()
	var extras []Extra
	var walk func(rel string, into *tree.Node) error
	walk = func(rel string, into *tree.Node) error {
		name := rel
		if name == "" {
			name = "."
		}
		d, err := root.Open(name)
		if err != nil {
			return fmt.Errorf("moss archived tree %s: %w", dir, err)
		}
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return fmt.Errorf("moss archived tree %s: %w", dir, err)
		}
		for _, e := range ents {
			p := e.Name()
			if rel != "" {
				p = rel + "/" + p
			}
			if rel == "" && e.Name() == state.StateIDName {
				continue // the transaction writes its own
			}
			have := b.Nodes[p]
			if have != nil && !(p == OSRelease && e.Type().IsRegular() && have.Mode&tree.TypeMask == tree.TypeReg) {
				if have.IsDir() && e.IsDir() {
					if err := walk(p, have); err != nil {
						return err
					}
				}
				continue
			}
			n, x, err := extraNode(root, p, s, tr)
			if err != nil {
				return fmt.Errorf("moss archived tree %s: %s: %w", dir, p, err)
			}
			if n == nil {
				continue // devices, fifos, sockets
			}
			if have != nil { // os-release replaces the package's file
				*have = tree.Node{Name: have.Name, Parent: have.Parent, Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: 1, Size: n.Size, Digest: n.Digest, Payload: n.Payload}
				delete(b.Want, have)
				b.Owner[have] = owner
				extras = append(extras, x)
				continue
			}
			into.AddChild(n)
			b.Nodes[p] = n
			b.Owner[n] = owner
			extras = append(extras, x)
			if n.IsDir() {
				if err := walk(p, n); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", b.Root); err != nil {
		return nil, err
	}
	b.Root.Sort()
	setNlinks(b.Root)
	return extras, nil
}

func extraNode(root *os.Root, p string, s *state.State, tr *Transfer) (*tree.Node, Extra, error) {
	fi, err := root.Lstat(p)
	if err != nil {
		return nil, Extra{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, Extra{}, errors.New("no stat")
	}
	perm := st.Mode & 0o7777
	n := &tree.Node{Name: path.Base(p), UID: st.Uid, GID: st.Gid, Nlink: 1}
	x := Extra{Path: p}
	switch fi.Mode().Type() {
	case fs.ModeDir:
		n.Mode = tree.TypeDir | perm
		x.Type = "directory"
	case fs.ModeSymlink:
		t, err := root.Readlink(p)
		if err != nil {
			return nil, x, err
		}
		n.Mode, n.Target, n.Size = tree.TypeLink|0o777, t, uint64(len(t))
		x.Type = "symlink"
	case 0:
		n.Mode = tree.TypeReg | perm
		x.Type, x.Size = "file", st.Size
		if st.Size > 0 {
			f, err := root.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return nil, x, err
			}
			sh := sha256.New()
			_, err = io.Copy(sh, f)
			var d [32]byte
			var how cas.How
			if err == nil {
				d, how, err = s.Store().PutFileHow("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
			}
			f.Close()
			if err == nil {
				err = s.IndexAdd([32]byte(sh.Sum(nil)), d)
			}
			if err != nil {
				return nil, x, err
			}
			tr.add(how, st.Size)
			n.Size, n.Digest, n.Payload = uint64(st.Size), d[:], cas.Payload(d)
		}
	default:
		return nil, x, nil
	}
	return n, x, nil
}
