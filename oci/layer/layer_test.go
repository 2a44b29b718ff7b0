package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

type memStore map[[32]byte][]byte

func (m memStore) Put(r io.Reader) ([32]byte, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return [32]byte{}, err
	}
	d := sha256.Sum256(b) // any digest will do here
	m[d] = b
	return d, nil
}

type ent struct {
	name, body, link string
	typ              byte
	xattrs           map[string]string
}

func mkTar(t testing.TB, es ...ent) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

func names(root *tree.Node) string {
	var out []string
	root.Walk(func(n *tree.Node) error {
		if n != root {
			s := n.Path()
			if n.LinkTo != nil {
				s += "=>" + n.LinkTo.Path()
			}
			out = append(out, s)
		}
		return nil
	})
	return strings.Join(out, " ")
}

func TestApplyWhiteoutsOpaqueHardlinks(t *testing.T) {
	big := strings.Repeat("x", 100)
	a := NewApplier(memStore{}, Limits{})
	if _, err := a.Apply(bytes.NewReader(mkTar(t,
		ent{name: "a/", typ: tar.TypeDir},
		ent{name: "a/keep", body: "k"},
		ent{name: "a/gone", body: big},
		ent{name: "o/", typ: tar.TypeDir},
		ent{name: "o/lower", body: "l"},
		ent{name: "h", body: big, xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02"}},
		ent{name: "h2", typ: tar.TypeLink, link: "h"},
		ent{name: "lib", typ: tar.TypeSymlink, link: "a"},
	)), "l1"); err != nil {
		t.Fatal(err)
	}
	own, err := a.Apply(bytes.NewReader(mkTar(t,
		ent{name: "a/.wh.gone"},
		ent{name: "o/", typ: tar.TypeDir},
		ent{name: "o/.wh..wh..opq"},
		ent{name: "o/upper", body: "u"},
		ent{name: ".wh.h"},                 // the inode lives on in h2
		ent{name: "lib/viasym", body: "v"}, // through the symlink, into a/
	)), "l2")
	if err != nil {
		t.Fatal(err)
	}
	want := "/a /a/keep /a/viasym /h2 /lib /o /o/upper"
	if got := names(a.Root); got != want {
		t.Errorf("merged: %s\nwant     %s", got, want)
	}
	h2 := a.Root.Lookup("h2")
	if v, ok := h2.Xattr("security.capability"); !ok || string(v) != "\x01\x00\x00\x02" || h2.Payload == "" || h2.LinkTo != nil {
		t.Errorf("h2 lost its inode: %+v", h2)
	}
	if got := names(own); got != "/.wh.h /a /a/.wh.gone /lib /lib/viasym /o /o/.wh..wh..opq /o/upper" {
		t.Errorf("own tree: %s", got)
	}
}

func TestApplyRefuses(t *testing.T) {
	cases := map[string][]ent{
		"dotdot":          {{name: "../x", body: "x"}},
		"absolute":        {{name: "/etc/x", body: "x"}},
		"symlink escape":  {{name: "l", typ: tar.TypeSymlink, link: "../../.."}, {name: "l/x", body: "x"}},
		"hardlink escape": {{name: "x", typ: tar.TypeLink, link: "../etc/passwd"}},
		"hardlink miss":   {{name: "x", typ: tar.TypeLink, link: "nope"}},
		"hardlink dir":    {{name: "d/", typ: tar.TypeDir}, {name: "x", typ: tar.TypeLink, link: "d"}},
		"bare wh":         {{name: "a/.wh."}},
		"wh root":         {{name: ".wh.."}},
	}
	for name, es := range cases {
		a := NewApplier(memStore{}, Limits{})
		if _, err := a.Apply(bytes.NewReader(mkTar(t, es...)), "bad"); err == nil {
			t.Errorf("%s: applied", name)
		} else if !strings.Contains(err.Error(), "layer bad") {
			t.Errorf("%s: error does not name the layer: %v", name, err)
		}
	}
	// Caps: entries and expansion.
	a := NewApplier(memStore{}, Limits{MaxEntries: 2})
	_, err := a.Apply(bytes.NewReader(mkTar(t, ent{name: "1"}, ent{name: "2"}, ent{name: "3"})), "many")
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "more than 2 entries") {
		t.Errorf("entry cap: %v", err)
	}
	// The files' sizes as the headers give them count too (a sparse
	// entry expands without reading the stream CapReader counts).
	_, err = NewApplier(memStore{}, Limits{MaxLayerBytes: 1000}).Apply(bytes.NewReader(mkTar(t, ent{name: "big", body: strings.Repeat("x", 2000)})), "sizes")
	if !errors.Is(err, ErrLimit) {
		t.Errorf("header size cap: %v", err)
	}
	body := mkTar(t, ent{name: "z", body: strings.Repeat("\x00", 1<<20)})
	a = NewApplier(memStore{}, Limits{})
	_, err = a.Apply(CapReader(bytes.NewReader(body), 1000, Limits{MaxLayerBytes: 1 << 19}, "bomb"), "bomb")
	if !errors.Is(err, ErrLimit) {
		t.Errorf("byte cap: %v", err)
	}
	_, err = NewApplier(memStore{}, Limits{}).Apply(CapReader(bytes.NewReader(body), 1000, Limits{RatioAfter: 1 << 18, Ratio: 10}, "bomb"), "bomb")
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "10×") {
		t.Errorf("ratio cap: %v", err)
	}
}

func FuzzApply(f *testing.F) {
	f.Add(mkTar(f, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a/b", body: strings.Repeat("b", 80)}, ent{name: "c", typ: tar.TypeLink, link: "a/b"}))
	f.Add(mkTar(f, ent{name: "l", typ: tar.TypeSymlink, link: "/x/.."}, ent{name: "l/.wh..wh..opq"}, ent{name: ".wh.l"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		a := NewApplier(memStore{}, Limits{MaxEntries: 1000, MaxLayerBytes: 1 << 16})
		for i := 0; i < 2; i++ {
			if _, err := a.Apply(CapReader(bytes.NewReader(data), int64(len(data)), Limits{MaxLayerBytes: 1 << 16}, "f"), "f"); err != nil {
				return
			}
		}
		// Whatever was applied is a consistent tree: no whiteout names,
		// hardlinks to live non-directory inodes in the tree.
		a.Root.Walk(func(n *tree.Node) error {
			if strings.HasPrefix(n.Name, ".wh.") {
				t.Fatalf("whiteout %s in the result", n.Path())
			}
			if n.LinkTo != nil && (n.LinkTo.IsDir() || n.LinkTo.Parent == nil) {
				t.Fatalf("%s links to a detached or directory inode", n.Path())
			}
			return nil
		})
	})
}
