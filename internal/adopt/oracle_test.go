package adopt

import (
	"bytes"
	"cmp"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// wantEntry is what one path of an adopted state must look like.
type wantEntry struct {
	typ      string // "dir", "file", "symlink"
	perm     uint32
	uid, gid uint32
	data     []byte
	target   string
}

// oracle computes the /usr tree of state id from the installation's
// definition, by the rules of ../shared/reference/stone-format.md §7–8
// (written from the reference, sharing no code with the importer): paths
// by depth then path, first row wins; implicit parents root:root 0755;
// symlinks naming a directory of the tree have what lies below them moved
// there (what is already there wins); what lies below a non-directory is
// lost; devices, fifos and sockets are skipped. Then the archived tree's
// files no row names (lib/os-release replacing a package's) and .stateID.
// Paths are relative to /usr.
func oracle(in *tInstall, id uint64, archive map[string]string) map[string]wantEntry {
	pkgs := map[string]tPkg{}
	for _, p := range in.pkgs {
		pkgs[p.id] = p
	}
	type ent struct {
		abs string
		r   tRow
	}
	var all []ent
	for _, pid := range in.states[id-1] {
		for _, r := range pkgs[pid].rows {
			if r.typ == "regular" || r.typ == "symlink" || r.typ == "directory" {
				all = append(all, ent{"/usr/" + r.path, r})
			}
		}
	}
	slices.SortStableFunc(all, func(a, b ent) int {
		if c := cmp.Compare(strings.Count(a.abs, "/"), strings.Count(b.abs, "/")); c != 0 {
			return c
		}
		return strings.Compare(a.abs, b.abs)
	})
	got := map[string]wantEntry{}
	for _, e := range all {
		if _, dup := got[e.abs]; dup {
			continue
		}
		w := wantEntry{perm: e.r.mode, uid: e.r.uid, gid: e.r.gid}
		switch e.r.typ {
		case "regular":
			w.typ, w.data = "file", e.r.data
		case "symlink":
			w.typ, w.target = "symlink", e.r.target
		default:
			w.typ = "dir"
		}
		got[e.abs] = w
	}
	for p := range got {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := got[d]; !ok {
				got[d] = wantEntry{typ: "dir", perm: 0o755}
			}
		}
	}
	byDepth := func() []string {
		ps := make([]string, 0, len(got))
		for p := range got {
			ps = append(ps, p)
		}
		slices.SortFunc(ps, func(a, b string) int {
			if c := cmp.Compare(strings.Count(a, "/"), strings.Count(b, "/")); c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		return ps
	}
	var links []string
	for p, w := range got {
		if w.typ == "symlink" {
			links = append(links, p)
		}
	}
	slices.Sort(links)
	for _, l := range links {
		t := got[l].target
		if !strings.HasPrefix(t, "/") {
			t = path.Dir(l) + "/" + t
		}
		if w, ok := got[t]; !ok || w.typ != "dir" {
			continue
		}
		for _, p := range byDepth() {
			rest, ok := strings.CutPrefix(p, l+"/")
			if !ok {
				continue
			}
			w := got[p]
			delete(got, p)
			if _, there := got[t+"/"+rest]; !there {
				got[t+"/"+rest] = w
			}
		}
	}
	for _, p := range byDepth() {
		if p == "/usr" {
			continue
		}
		if par, ok := got[path.Dir(p)]; !ok || par.typ != "dir" {
			delete(got, p)
		}
	}
	out := map[string]wantEntry{}
	for p, w := range got {
		if rel, ok := strings.CutPrefix(p, "/usr/"); ok {
			out[rel] = w
		}
	}
	for p, c := range archive {
		p = strings.TrimSuffix(p, "/")
		if p == ".stateID" {
			continue
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := out[d]; !ok {
				out[d] = wantEntry{typ: "dir", perm: 0o755}
			}
		}
		_, have := out[p]
		if have && p != "lib/os-release" {
			continue
		}
		switch {
		case strings.HasPrefix(c, "->"):
			out[p] = wantEntry{typ: "symlink", perm: 0o777, target: c[2:]}
		case strings.HasSuffix(archiveKey(archive, p), "/"):
			out[p] = wantEntry{typ: "dir", perm: 0o750}
		default:
			out[p] = wantEntry{typ: "file", perm: 0o644, data: []byte(c)}
		}
	}
	out[".stateID"] = wantEntry{typ: "file", perm: 0o644, data: []byte(strconv.FormatUint(id, 10))}
	return out
}

func archiveKey(archive map[string]string, p string) string {
	if _, ok := archive[p+"/"]; ok {
		return p + "/"
	}
	return p
}

// compareMounted walks the kernel's view of a mounted image and compares
// it with want: the same paths, types, permissions, owners, symlink
// targets and contents.
func compareMounted(t *testing.T, mnt string, want map[string]wantEntry) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel == "." {
			return nil
		}
		seen[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("/usr/%s: in the image, not in the oracle", rel)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		typ := map[fs.FileMode]string{0: "file", fs.ModeDir: "dir", fs.ModeSymlink: "symlink"}[fi.Mode().Type()]
		if typ != w.typ {
			t.Errorf("/usr/%s: %s, want %s", rel, fi.Mode().Type(), w.typ)
			return nil
		}
		if typ != "symlink" && st.Mode&0o7777 != w.perm {
			t.Errorf("/usr/%s: mode %o, want %o", rel, st.Mode&0o7777, w.perm)
		}
		if st.Uid != w.uid || st.Gid != w.gid {
			t.Errorf("/usr/%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, w.uid, w.gid)
		}
		switch typ {
		case "symlink":
			if l, _ := os.Readlink(p); l != w.target {
				t.Errorf("/usr/%s: -> %q, want %q", rel, l, w.target)
			}
		case "file":
			data, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("/usr/%s: %v", rel, err)
			} else if !bytes.Equal(data, w.data) {
				t.Errorf("/usr/%s: content of %d bytes differs from the oracle's %d", rel, len(data), len(w.data))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("/usr/%s: in the oracle, not in the image", p)
		}
	}
}
