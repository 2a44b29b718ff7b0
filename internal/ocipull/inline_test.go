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

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/layer"
	"go.podman.io/image/v5/docker/reference"
)

// smallFilesImage is a layer of n files small enough to be inlined in the
// EROFS image (all different), then files of other content: big ones
// (distinct per tag) that B does not share with A.
func smallFilesImage(t *testing.T, n int, tag string) [][]byte {
	entries := []ocitest.Entry{{Name: "etc/", Type: tar.TypeDir}, {Name: "small/", Type: tar.TypeDir}, {Name: "big/", Type: tar.TypeDir}}
	for i := range n {
		body := fmt.Sprintf("small file %d: %s", i, strings.Repeat("x", i%40))
		entries = append(entries, ocitest.Entry{Name: fmt.Sprintf("small/%03d", i), Body: body})
	}
	for i := range 4 {
		entries = append(entries, ocitest.Entry{Name: fmt.Sprintf("big/%d", i), Body: strings.Repeat(fmt.Sprintf("%s big %d ", tag, i), 2000)})
	}
	return [][]byte{ocitest.Tar(t, entries...)}
}

// dropInlineContents removes, from a store, the objects of contents small
// enough to be inlined and their sha256 index links: the store as importers
// left it before they kept inline contents as objects.
func dropInlineContents(t *testing.T, st *state.State) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(st.SHA256Dir(), "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > layer.InlineMax {
			return err
		}
		target, _ := os.Readlink(p)
		obj, err := cas.ParsePayload(strings.TrimPrefix(target, "../../../cas/objects/"))
		if err != nil {
			return err
		}
		n++
		os.Remove(p)
		return st.Store().Remove(obj)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPullPartialInlineFilesPresent: images A and B share 300 files small
// enough to be inlined in the EROFS image (and nothing else). A pull keeps
// them as objects with sha256 index links too, so B's partial pull, after
// A's, finds them in the store and fetches only its own big files. The
// baseline in the same run is a store where A's inline-size contents have
// no object and no link (what pulls did before): there B fetches all 300
// small files again. Bytes are counted from the registry's access log.
func TestPullPartialInlineFilesPresent(t *testing.T) {
	reg := ocitest.StartRegistry(t)
	dir := t.TempDir()
	sys, policy := registryClient(t, reg, dir)
	const small = 300
	lay := filepath.Join(dir, "layout")
	for _, name := range []string{"a", "b"} {
		ocitest.WriteLayout(t, lay, name, ocitest.Image{Layers: smallFilesImage(t, small, name)})
	}
	// B under two names, so that the registry's log tells the two pulls of
	// B apart.
	for _, repo := range []string{"in/a:1", "in/b:1", "in/b-baseline:1"} {
		ref, _ := reference.ParseNormalizedNamed(reg.Name(repo))
		pushZstdChunked(t, lay, strings.TrimSuffix(strings.TrimPrefix(repo, "in/"), ":1")[:1], ref, sys)
	}
	pull := func(st *state.State, repo string) *PullResult {
		t.Helper()
		res, err := Pull(context.Background(), st, reg.Ref(repo), PullOptions{Sys: sys, PolicyPath: policy, Fetcher: &PartialLayers{State: st, Sys: sys}})
		if err != nil {
			t.Fatalf("pull %s: %v", repo, err)
		}
		return res
	}
	stores := map[string]*state.State{}
	for _, name := range []string{"new", "baseline"} {
		st, err := state.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		stores[name] = st
		pull(st, "in/a:1")
	}
	// A's inline-size contents are objects with index links now.
	for i := range small {
		body := fmt.Sprintf("small file %d: %s", i, strings.Repeat("x", i%40))
		if !(StoreContents{State: stores["new"]}).HasSHA256(sha256.Sum256([]byte(body))) {
			t.Fatalf("after pulling A, the index has no link for small/%03d (%d bytes)", i, len(body))
		}
	}
	if v, err := stores["new"].Verify(state.VerifyOptions{NoQuarantine: true}); err != nil || !v.OK() || !v.Index.Complete() {
		t.Fatalf("verify after A: %+v %+v %v", v, v.Index, err)
	}
	if n := dropInlineContents(t, stores["baseline"]); n != small {
		t.Fatalf("baseline: dropped %d inline-size contents, want %d", n, small)
	}

	resNew := pull(stores["new"], "in/b:1")
	resBase := pull(stores["baseline"], "in/b-baseline:1")
	l := resNew.Image.Layers[0]
	bytesNew, reqNew := reg.BlobBytes(t, "in/b", l.Digest)
	bytesBase, reqBase := reg.BlobBytes(t, "in/b-baseline", l.Digest)
	t.Logf("B after A (layer %d bytes): registry sent %d bytes in %d requests with inline contents kept, %d bytes in %d requests without (%.2fx); files fetched %d vs %d",
		l.Size, bytesNew, reqNew, bytesBase, reqBase, float64(bytesNew)/float64(bytesBase), resNew.Partial.FilesFetched, resBase.Partial.FilesFetched)
	if resNew.Partial.FilesFetched != 4 || resBase.Partial.FilesFetched != 4+small {
		t.Errorf("B fetched %d files (baseline %d), want only its 4 big ones (baseline: and the %d small ones)", resNew.Partial.FilesFetched, resBase.Partial.FilesFetched, small)
	}
	if bytesNew >= bytesBase {
		t.Errorf("B cost %d bytes with inline contents in the store, %d without", bytesNew, bytesBase)
	}
	// Both give the same image.
	if resNew.Image.Image != resBase.Image.Image {
		t.Errorf("images differ: %s and %s", resNew.Image.Image, resBase.Image.Image)
	}

	// gc keeps the inline-size objects while an image holds the contents,
	// and removes them, with their links, once none does.
	st := stores["new"]
	g, err := st.GC(state.GCOptions{})
	if err != nil || g.ObjectsRemoved != 0 {
		t.Fatalf("gc with both images: %+v %v", g, err)
	}
	if v, err := st.Verify(state.VerifyOptions{NoQuarantine: true}); err != nil || !v.OK() || !v.Index.Complete() {
		t.Fatalf("verify after gc: %+v %+v %v", v, v.Index, err)
	}
	for _, name := range []string{reg.Name("in/a:1"), reg.Name("in/b:1")} {
		if _, err := st.RemoveContainer(name); err != nil {
			t.Fatal(err)
		}
	}
	if g, err = st.GC(state.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if g.ObjectsLive != 0 || g.IndexLinksRemoved < small {
		t.Errorf("gc without images: %d objects live, %d links removed; want 0, >= %d", g.ObjectsLive, g.IndexLinksRemoved, small)
	}
}
