package ocipull

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/layer"
)

// storeSnapshot lists everything under a state root: paths, types, modes,
// sizes, contents' digests and link targets (records, names, index links,
// objects, images, fragments).
func storeSnapshot(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHostileLayers: each refused pull names what is wrong and leaves the
// store exactly as it was (no record, name, index link, object or image).
func TestHostileLayers(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	st, err := state.Create(filepath.Join(dir, "moss"))
	if err != nil {
		t.Fatal(err)
	}
	big := func(s string) string { return strings.Repeat(s, 300) }
	good := ocitest.Tar(t, ocitest.Entry{Name: "etc/", Type: tar.TypeDir}, ocitest.Entry{Name: "etc/a", Body: big("a")})
	layoutDir := filepath.Join(dir, "layout")
	ocitest.WriteLayout(t, layoutDir, "good", ocitest.Image{Layers: [][]byte{good}, Gzip: true})
	pull := func(ref string, lim layer.Limits) error {
		_, err := Pull(context.Background(), st, "oci:"+layoutDir+":"+ref, PullOptions{PolicyPath: policy, Limits: lim})
		return err
	}
	if err := pull("good", layer.Limits{}); err != nil {
		t.Fatal(err)
	}
	before := storeSnapshot(t, st.Root())

	// Every hostile layer stores new content first (fresh objects that the
	// refusal must remove), then the bad entry.
	fresh := func(i int) ocitest.Entry {
		return ocitest.Entry{Name: fmt.Sprintf("fresh%d", i), Body: big(fmt.Sprintf("fresh %d ", i))}
	}
	var huge strings.Builder
	for huge.Len() < 2<<20 {
		huge.WriteString("x")
	}
	cases := []struct {
		name    string
		entries []ocitest.Entry
		raw     []byte // a layer that is not built from entries
		lim     layer.Limits
		want    string
	}{
		{name: "dotdot", entries: []ocitest.Entry{{Name: "../etc/passwd", Body: "x"}}, want: `".."`},
		{name: "absolute", entries: []ocitest.Entry{{Name: "/etc/passwd", Body: "x"}}, want: "absolute path"},
		{name: "symlink-escape", entries: []ocitest.Entry{{Name: "up", Type: tar.TypeSymlink, Linkname: "../../.."}, {Name: "up/etc/x", Body: "x"}}, want: "outside the root"},
		{name: "hardlink-outside", entries: []ocitest.Entry{{Name: "x", Type: tar.TypeLink, Linkname: "../../etc/shadow"}}, want: `".."`},
		{name: "hardlink-missing", entries: []ocitest.Entry{{Name: "x", Type: tar.TypeLink, Linkname: "etc/nothing"}}, want: "does not exist"},
		{name: "bare-whiteout", entries: []ocitest.Entry{{Name: "etc/.wh."}}, want: `bare ".wh."`},
		{name: "root-whiteout", entries: []ocitest.Entry{{Name: ".wh.."}}, want: "whiteout of the root"},
		{name: "huge-header", raw: hugePAX(t, huge.String()), want: "reading tar"},
		{name: "malformed", raw: []byte(strings.Repeat("not a tar header ", 64)), want: "reading tar"},
		{name: "bomb-bytes", entries: []ocitest.Entry{{Name: "zeros", Body: strings.Repeat("\x00", 3<<20)}}, lim: layer.Limits{MaxLayerBytes: 1 << 20}, want: "expands past"},
		{name: "bomb-ratio", entries: []ocitest.Entry{{Name: "zeros", Body: strings.Repeat("\x00", 3<<20)}}, lim: layer.Limits{RatioAfter: 1 << 20, Ratio: 20}, want: "× its compressed size"},
		{name: "entries", entries: []ocitest.Entry{{Name: "1"}, {Name: "2"}, {Name: "3"}, {Name: "4"}}, lim: layer.Limits{MaxEntries: 4}, want: "more than 4 entries"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tarb := c.raw
			if tarb == nil {
				tarb = ocitest.Tar(t, append([]ocitest.Entry{fresh(i)}, c.entries...)...)
			}
			ocitest.WriteLayout(t, layoutDir, c.name, ocitest.Image{Layers: [][]byte{good, tarb}, Gzip: true})
			err := pull(c.name, c.lim)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("pull: %v; want an error saying %q", err, c.want)
			}
			if after := storeSnapshot(t, st.Root()); !equalSnap(before, after) {
				t.Errorf("the store changed: %s", diffSnap(before, after))
			}
		})
	}

	// A layer that does not match its digest, and one whose tar does not
	// match the config's diff_id.
	t.Run("digest", func(t *testing.T) {
		w := ocitest.WriteLayout(t, layoutDir, "digest", ocitest.Image{Layers: [][]byte{ocitest.Tar(t, fresh(100))}})
		blob := filepath.Join(layoutDir, "blobs", "sha256", strings.TrimPrefix(w.LayerDigests[0], "sha256:"))
		b, _ := os.ReadFile(blob)
		b[600] ^= 1 // inside the file's content
		os.WriteFile(blob, b, 0o644)
		err := pull("digest", layer.Limits{})
		if err == nil || !strings.Contains(err.Error(), "does not match its digest") {
			t.Fatalf("pull: %v", err)
		}
		if after := storeSnapshot(t, st.Root()); !equalSnap(before, after) {
			t.Errorf("the store changed: %s", diffSnap(before, after))
		}
	})
	t.Run("diff_id", func(t *testing.T) {
		tarb := ocitest.Tar(t, fresh(101))
		w := ocitest.WriteLayout(t, layoutDir, "diffid", ocitest.Image{Layers: [][]byte{tarb}, Gzip: true})
		// Rewrite the config with another diff_id, and the manifest and
		// index to match (everything but the diff_id consistent).
		rewriteDiffID(t, layoutDir, w)
		err := pull("diffid", layer.Limits{})
		if err == nil || !strings.Contains(err.Error(), "diff_id") {
			t.Fatalf("pull: %v", err)
		}
		if after := storeSnapshot(t, st.Root()); !equalSnap(before, after) {
			t.Errorf("the store changed: %s", diffSnap(before, after))
		}
	})
}

// hugePAX is a tar whose first entry has a PAX header of len(v) bytes (past
// archive/tar's 1 MiB cap), then a regular file.
func hugePAX(t *testing.T, v string) []byte {
	rec := fmt.Sprintf("user.big=%s\n", v)
	rec = fmt.Sprintf("%d %s", len(rec)+len(fmt.Sprint(len(rec)))+2, rec)
	var buf strings.Builder
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "pax", Typeflag: tar.TypeReg, Size: int64(len(rec)), Mode: 0o644, Format: tar.FormatUSTAR})
	tw.Write([]byte(rec))
	tw.Flush()
	b := []byte(buf.String())
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	rest := ocitest.Tar(t, ocitest.Entry{Name: "after", Body: "x"})
	return append(b, rest...)
}

func rewriteDiffID(t *testing.T, dir string, w ocitest.Written) {
	t.Helper()
	blob := func(d string) string { return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")) }
	put := func(b []byte) (string, int) {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		os.WriteFile(blob(d), b, 0o644)
		return d, len(b)
	}
	cfg, _ := os.ReadFile(blob(w.ConfigDigest))
	wrong := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("another layer")))
	cfg = []byte(strings.Replace(string(cfg), w.DiffIDs[0], wrong, 1))
	cd, cn := put(cfg)
	man, _ := os.ReadFile(blob(w.ManifestDigest))
	man = []byte(strings.Replace(string(man), w.ConfigDigest, cd, 1))
	man = []byte(strings.Replace(string(man), `"size":`+fmt.Sprint(len(cfg)-0), `"size":`+fmt.Sprint(cn), 1))
	md, mn := put(man)
	idx, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	old := fmt.Sprintf(`"digest":"%s","size":`, w.ManifestDigest)
	i := strings.Index(string(idx), old)
	if i < 0 {
		t.Fatalf("index.json has no %s", w.ManifestDigest)
	}
	rest := string(idx[i+len(old):])
	j := strings.IndexAny(rest, ",}")
	idx = []byte(string(idx[:i]) + fmt.Sprintf(`"digest":"%s","size":%d`, md, mn) + rest[j:])
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
}

func equalSnap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func diffSnap(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	if len(out) > 8 {
		out = out[:8]
	}
	return strings.Join(out, "; ")
}
