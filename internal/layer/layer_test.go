package layer

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

// build makes a tree from "path" → spec lines: "dir", "file:CONTENT",
// "link:TARGET", "whiteout"; xattrs as extra "|name=value" fields.
func build(t *testing.T, entries map[string]string) *tree.Node {
	t.Helper()
	root := &tree.Node{Mode: tree.TypeDir | 0o755}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		parent := root
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for _, name := range parts[:len(parts)-1] {
			c := parent.Child(name)
			if c == nil {
				c = &tree.Node{Name: name, Mode: tree.TypeDir | 0o755}
				parent.AddChild(c)
				parent.SortChildren()
			}
			parent = c
		}
		fields := strings.Split(entries[p], "|")
		n := &tree.Node{Name: parts[len(parts)-1]}
		kind, arg, _ := strings.Cut(fields[0], ":")
		switch kind {
		case "dir":
			n.Mode = tree.TypeDir | 0o755
		case "file":
			n.Mode, n.Content, n.Size = tree.TypeReg|0o644, []byte(arg), uint64(len(arg))
		case "ext":
			n.Mode, n.Payload, n.Size = tree.TypeReg|0o644, arg, 100
		case "link":
			n.Mode, n.Target = tree.TypeLink|0o777, arg
		case "whiteout":
			n.Mode = tree.TypeChar
		case "chmod":
			n.Mode, n.Size = tree.TypeReg|0o600, 100
		}
		for _, x := range fields[1:] {
			k, v, _ := strings.Cut(x, "=")
			n.SetXattr(k, []byte(v))
		}
		if c := parent.Child(n.Name); c != nil {
			c.Mode, c.Xattrs = n.Mode, n.Xattrs
			continue
		}
		parent.AddChild(n)
		parent.SortChildren()
	}
	return root
}

func listing(root *tree.Node) []string {
	var out []string
	_ = root.Walk(func(n *tree.Node) error {
		if n.Parent == nil {
			return nil
		}
		s := n.Path()
		switch n.Mode & tree.TypeMask {
		case tree.TypeDir:
			s += "/"
		case tree.TypeReg:
			s += "=" + string(n.Content) + n.Payload
			if n.Mode&0o777 != 0o644 {
				s += fmt.Sprintf(" mode %o", n.Mode&0o777)
			}
		case tree.TypeLink:
			s += "->" + n.Target
		case tree.TypeChar:
			s += " whiteout"
		}
		for _, x := range n.Xattrs {
			s += " " + x.Name
		}
		out = append(out, s)
		return nil
	})
	return out
}

func TestFromUpperAndApply(t *testing.T) {
	base := build(t, map[string]string{
		"/a/keep":         "file:k",
		"/a/del":          "file:d",
		"/a/big":          "ext:aa/bbbb",
		"/a/moved/x":      "file:x",
		"/a/moved/sub/y":  "ext:cc/dddd",
		"/a/opq/old":      "file:o",
		"/a/renamed-file": "ext:ee/ffff",
		"/b/z":            "file:z",
	})
	upper := build(t, map[string]string{
		// Directory copy-ups carry overlay bookkeeping.
		"/a":     "dir|trusted.overlay.origin=xx|trusted.overlay.impure=y",
		"/a/del": "whiteout",
		// Metadata-only copy-up (chmod): the data is the lower file's.
		"/a/big": "chmod|trusted.overlay.metacopy=|trusted.overlay.origin=xx",
		// A renamed directory: relative redirect, plus a change inside it.
		"/a/moved":        "whiteout",
		"/a/new":          "dir|trusted.overlay.redirect=moved",
		"/a/new/x":        "whiteout",
		"/a/new/added":    "file:n",
		"/a/opq":          "dir|trusted.overlay.opaque=y",
		"/a/opq/fresh":    "file:f",
		"/a/made":         "dir|trusted.overlay.opaque=y", // a new directory: opaque in overlayfs, nothing to hide
		"/a/made/file":    "file:m",
		"/a/renamed-file": "whiteout",
		// A renamed file: metacopy with an absolute redirect.
		"/b/moved-file": "chmod|trusted.overlay.metacopy=|trusted.overlay.redirect=/a/renamed-file",
		// Metacopy whose redirect names the data-only layer's object.
		"/b/obj": "chmod|trusted.overlay.metacopy=|trusted.overlay.redirect=/12/" + strings.Repeat("3", 62),
		"/b/sym": "link:../a/keep|security.capability=x",
	})
	l, err := FromUpper(upper, View(base, nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range Entries(l) {
		s := e.Path
		if e.Deleted {
			s = "-" + s
		}
		if e.Dir {
			s += "/"
		}
		got = append(got, s)
	}
	want := []string{"/a/big", "-/a/del", "/a/made/file", "-/a/moved", "/a/new/", "/a/opq/", "/a/opq/fresh", "-/a/renamed-file",
		"/b/moved-file", "/b/obj", "/b/sym"}
	// Entries walks the layer in tree order (children of an opaque directory included).
	if strings.Join(sortedCopy(got), " ") != strings.Join(sortedCopy(append(want, "/a/new/added", "/a/new/sub/y")), " ") {
		t.Errorf("entries:\n%v\nwant\n%v", sortedCopy(got), sortedCopy(append(want, "/a/new/added", "/a/new/sub/y")))
	}
	Apply(base, l, func(n *tree.Node) { n.UID = 7 })
	gotTree := listing(base)
	wantTree := []string{
		"/a/", "/a/big=aa/bbbb mode 600", "/a/keep=k", "/a/made/", "/a/made/file=m", "/a/new/", "/a/new/added=n",
		"/a/new/sub/", "/a/new/sub/y=cc/dddd", "/a/opq/", "/a/opq/fresh=f",
		"/b/", "/b/moved-file=ee/ffff mode 600", "/b/obj=12/" + strings.Repeat("3", 62) + " mode 600", "/b/sym->../a/keep security.capability", "/b/z=z",
	}
	if strings.Join(gotTree, "\n") != strings.Join(wantTree, "\n") {
		t.Errorf("applied tree:\n%s\nwant\n%s", strings.Join(gotTree, "\n"), strings.Join(wantTree, "\n"))
	}
	// Only what the layer added or replaced is stamped; merged directories keep theirs.
	if base.Child("a").UID == 7 || base.Child("a").Child("keep").UID == 7 {
		t.Error("a merged directory or an untouched file was stamped")
	}
	if base.Child("a").Child("new").Child("sub").Child("y").UID != 7 || base.Child("a").Child("big").UID != 7 {
		t.Error("layer output was not stamped")
	}
}

func TestMetacopyWithoutLower(t *testing.T) {
	base := build(t, map[string]string{"/a/x": "file:x"})
	upper := build(t, map[string]string{"/a/gone": "chmod|trusted.overlay.metacopy="})
	if _, err := FromUpper(upper, View(base, nil)); err == nil || !strings.Contains(err.Error(), "/a/gone") {
		t.Errorf("a metacopy without a lower file: %v", err)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
