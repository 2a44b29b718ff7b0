package sharetest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// node is what a comparison looks at for one path: type, permission bits,
// owners, content digest (regular files), link target, device numbers,
// xattrs, mtime, and the hardlink group (the first path of the inode, by
// name order; "" for an inode with one name).
type node struct {
	Type   string
	Mode   uint32 // permission, setuid/setgid/sticky bits
	UID    int
	GID    int
	Size   int64
	Digest string
	Target string
	Rdev   uint64
	Xattrs map[string]string
	Mtime  int64 // seconds
	Link   string
}

func (n node) String() string {
	var xs []string
	for k, v := range n.Xattrs {
		xs = append(xs, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(xs)
	return fmt.Sprintf("%s %04o %d:%d size=%d sha=%.12s target=%q rdev=%d mtime=%d link=%q xattrs=[%s]",
		n.Type, n.Mode, n.UID, n.GID, n.Size, n.Digest, n.Target, n.Rdev, n.Mtime, n.Link, strings.Join(xs, " "))
}

// treeMap maps slash paths relative to the root (no leading slash; the root
// itself is left out) to their nodes.
type treeMap map[string]node

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "reg"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "sock"
	}
	return "?"
}

// readDir describes the tree below root as the kernel shows it (lstat,
// llistxattr, file contents). Xattrs whose name starts with one of
// hideXattrs are left out.
func readDir(root string, hideXattrs ...string) (treeMap, error) {
	out := treeMap{}
	type ino struct{ dev, ino uint64 }
	groups := map[ino][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{Type: typeName(st.Mode), Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid), Mtime: st.Mtim.Sec}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Size = int64(len(b))
			s := sha256.Sum256(b)
			n.Digest = hex.EncodeToString(s[:])
			if st.Nlink > 1 {
				k := ino{st.Dev, st.Ino}
				groups[k] = append(groups[k], rel)
			}
		case unix.S_IFLNK:
			n.Target, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			n.Rdev = st.Rdev
		}
		n.Xattrs, err = xattrs(p, hideXattrs)
		if err != nil {
			return err
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, names := range groups {
		if len(names) < 2 {
			continue
		}
		slices.Sort(names)
		for _, name := range names {
			n := out[name]
			n.Link = names[0]
			out[name] = n
		}
	}
	return out, nil
}

func xattrs(p string, hide []string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out map[string]string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" || slices.ContainsFunc(hide, func(h string) bool { return strings.HasPrefix(name, h) }) {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, name, err)
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(v[:vsz])
	}
	return out, nil
}

// readTar describes the tree one uncompressed layer tar holds (no
// whiteouts expected: a single layer or an already merged one).
func readTar(data []byte) (treeMap, error) {
	out := treeMap{}
	links := map[string][]string{} // target -> names
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		n := node{Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid, Mtime: h.ModTime.Unix()}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[x] = v
			}
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			n.Type, n.Size = "reg", int64(len(b))
			s := sha256.Sum256(b)
			n.Digest = hex.EncodeToString(s[:])
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			t, ok := out[target]
			if !ok {
				return nil, fmt.Errorf("tar: hardlink %s to %s, not seen before", name, target)
			}
			n = t
			links[target] = append(links[target], name)
		case tar.TypeDir:
			n.Type = "dir"
		case tar.TypeSymlink:
			n.Type, n.Target = "symlink", h.Linkname
		case tar.TypeChar:
			n.Type, n.Rdev = "char", unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		case tar.TypeBlock:
			n.Type, n.Rdev = "block", unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		case tar.TypeFifo:
			n.Type = "fifo"
		default:
			return nil, fmt.Errorf("tar: %s: type %c", name, h.Typeflag)
		}
		out[name] = n
	}
	for target, names := range links {
		all := append([]string{target}, names...)
		slices.Sort(all)
		for _, name := range all {
			n := out[name]
			n.Link = all[0]
			out[name] = n
		}
	}
	return out, nil
}

// diffTrees lists the differences between want and got, one line each,
// sorted by path. Mtimes are compared only with mtimes set; else
// otherMtimes counts the entries whose mtime differs.
func diffTrees(want, got treeMap, mtimes bool) (diffs []string, otherMtimes int) {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		if ok && !mtimes && w.Mtime != g.Mtime {
			otherMtimes++
			g.Mtime = w.Mtime
		}
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing (want %v)", p, w))
		case w.String() != g.String():
			out = append(out, fmt.Sprintf("%s:\n\twant %v\n\thave %v", p, w, g))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected %v", p, g))
		}
	}
	sort.Strings(out)
	return out, otherMtimes
}
