package erofs

import (
	"bytes"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"testing"

	goerofs "github.com/erofs/go-erofs"
	"github.com/mossfs/mossfs/tree"
)

// rdCompareGoErofs walks the image's raw EROFS structure (stubs included,
// xattrs as stored) and checks every entry against github.com/erofs/go-erofs,
// an independent reader: names, mode and type, uid, gid, size, mtime, nlink,
// rdev, symlink target, raw xattrs and inline content.
func rdCompareGoErofs(t *testing.T, name string, image []byte) int {
	t.Helper()
	img, err := Open(bytes.NewReader(image))
	if err != nil {
		t.Fatalf("%s: Open: %v", name, err)
	}
	ofs, err := goerofs.Open(bytes.NewReader(image))
	if err != nil {
		t.Fatalf("%s: go-erofs Open: %v", name, err)
	}
	lfs := ofs.(fs.ReadLinkFS)
	count := 0
	var walk func(p string, nid uint64)
	walk = func(p string, nid uint64) {
		ino, err := img.base(nid)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, p, err)
		}
		count++
		fi, err := lfs.Lstat(p)
		if err != nil {
			t.Errorf("%s: go-erofs Lstat %s: %v", name, p, err)
			return
		}
		st := fi.Sys().(*goerofs.Stat)
		// go-erofs's FileInfo.Mode keeps the raw st_mode in its low 16 bits
		// (and drops setuid/setgid/sticky from the io/fs flags): compare
		// the raw mode there, type and permissions through Stat.Mode.
		mode := tree.ModeToFileMode(ino.Mode)
		if uint32(fi.Mode())&0xffff != ino.Mode || st.Mode.Type() != mode.Type() || st.Mode.Perm() != mode.Perm() {
			t.Errorf("%s: %s: mode %#o, go-erofs %#o (%v)", name, p, ino.Mode, uint32(fi.Mode())&0xffff, st.Mode)
		}
		if st.UID != ino.UID || st.GID != ino.GID {
			t.Errorf("%s: %s: owner %d:%d, go-erofs %d:%d", name, p, ino.UID, ino.GID, st.UID, st.GID)
		}
		if uint64(st.Size) != ino.Size {
			t.Errorf("%s: %s: size %d, go-erofs %d", name, p, ino.Size, st.Size)
		}
		if int64(st.Mtime) != ino.Mtime.Sec || st.MtimeNs != ino.Mtime.Nsec {
			t.Errorf("%s: %s: mtime %v, go-erofs %d.%d", name, p, ino.Mtime, st.Mtime, st.MtimeNs)
		}
		if uint32(st.Nlink) != ino.Nlink {
			t.Errorf("%s: %s: nlink %d, go-erofs %d", name, p, ino.Nlink, st.Nlink)
		}
		if st.Rdev != ino.Rdev {
			t.Errorf("%s: %s: rdev %d, go-erofs %d", name, p, ino.Rdev, st.Rdev)
		}
		raw, err := img.RawXattrs(nid)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, p, err)
		}
		mine := map[string]string{}
		for _, x := range raw {
			mine[x.Name] = string(x.Value)
		}
		theirs := map[string]string{}
		for k, v := range st.Xattrs {
			// go-erofs names the ACL indexes "system.posix_acl_access."
			// (trailing dot); the kernel and libcomposefs use the bare name.
			if k == XattrACLAccess+"." || k == XattrACLDflt+"." {
				k = k[:len(k)-1]
			}
			theirs[k] = v
		}
		if !maps.Equal(mine, theirs) {
			t.Errorf("%s: %s: xattrs %q, go-erofs %q", name, p, mine, theirs)
		}
		switch ino.Mode & tree.TypeMask {
		case tree.TypeLink:
			target, err := img.symlinkTarget(ino)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, p, err)
			}
			their, err := lfs.ReadLink(p)
			if err != nil || their != target {
				t.Errorf("%s: %s: target %q, go-erofs %q (%v)", name, p, target, their, err)
			}
		case tree.TypeReg:
			if ino.layout == LayoutChunkBased || ino.Size == 0 {
				break
			}
			data, err := img.content(ino)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, p, err)
			}
			f, err := ofs.Open(p)
			if err != nil {
				t.Fatalf("%s: go-erofs open %s: %v", name, p, err)
			}
			their, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(data, their) {
				t.Errorf("%s: %s: inline content differs from go-erofs (%d vs %d bytes, %v)", name, p, len(data), len(their), err)
			}
		case tree.TypeDir:
			raw, err := img.readDirRaw(ino)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, p, err)
			}
			var names []string
			for _, d := range raw {
				if d.name != "." && d.name != ".." {
					names = append(names, d.name)
				}
			}
			theirEnts, err := fs.ReadDir(ofs, p)
			if err != nil {
				t.Fatalf("%s: go-erofs ReadDir %s: %v", name, p, err)
			}
			var theirNames []string
			for _, e := range theirEnts {
				theirNames = append(theirNames, e.Name())
			}
			if !slices.Equal(names, theirNames) {
				t.Errorf("%s: %s: entries %q, go-erofs %q", name, p, names, theirNames)
			}
			for _, d := range raw {
				if d.name == "." || d.name == ".." {
					continue
				}
				walk(path.Join(p, d.name), d.nid)
			}
		}
	}
	walk(".", img.RootNid())
	return count
}

func TestGoErofsOracleGolden(t *testing.T) {
	for name, b := range rdGoldens(t) {
		n := rdCompareGoErofs(t, name, b)
		// Every golden image has the root and its 256 stubs.
		if n < 257 {
			t.Errorf("%s: only %d inodes walked", name, n)
		}
	}
}
