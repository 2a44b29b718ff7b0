package state

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/stone"
)

// indexResolves checks, independently of the index code, that the link of
// content's sha256 exists under the state root, is a relative symlink and
// resolves to a file with exactly that content.
func indexResolves(t *testing.T, s *State, content string) bool {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	p := filepath.Join(s.Root(), IndexRelPath(sum))
	target, err := os.Readlink(p)
	if err != nil {
		return false
	}
	if filepath.IsAbs(target) {
		t.Errorf("%s: absolute target %s", p, target)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%s -> %s: %v", p, target, err)
		return false
	}
	if string(got) != content {
		t.Errorf("%s resolves to other content", p)
	}
	return true
}

func TestSHA256Index(t *testing.T) {
	s := newState(t)
	src := t.TempDir()
	files := map[string]string{"a": big("a"), "b/c": big("c"), "b/d": strings.Repeat("large", 300_000)}
	for p, c := range files {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := im.Tree(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	f.Input = Input{Kind: KindTree, Name: "t"}
	tx := compose(t, s, ComposeOptions{Add: []Fragment{f}})
	for p, c := range files {
		if !indexResolves(t, s, c) {
			t.Errorf("no index link for %s", p)
		}
	}
	// The index directories are private, like the rest of the state root.
	for _, d := range []string{"sha256", "sha256/objects"} {
		if fi, err := os.Stat(filepath.Join(s.Root(), d)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
	if v, ok := s.IndexLookup(sha256.Sum256([]byte(files["a"]))); !ok || !s.Store().Has(v) {
		t.Errorf("IndexLookup(a) = %x, %v", v, ok)
	}

	// Verify: a complete index is OK; a removed link, a wrong link and a
	// stray are found and rebuilt.
	res, err := s.Verify(VerifyOptions{})
	if err != nil || !res.OK() || res.Index == nil || !res.Index.Complete() || res.Index.Links != 3 {
		t.Fatalf("verify of a fresh index: %+v %+v %v", res, res.Index, err)
	}
	sumA, sumC := sha256.Sum256([]byte(files["a"])), sha256.Sum256([]byte(files["b/c"]))
	os.Remove(filepath.Join(s.Root(), IndexRelPath(sumA)))
	target, _ := os.Readlink(filepath.Join(s.Root(), IndexRelPath(sumC)))
	os.Remove(filepath.Join(s.Root(), IndexRelPath(sumC)))
	os.Symlink(strings.Replace(target, "/cas/objects/", "/cas/objects/00", 1), filepath.Join(s.Root(), IndexRelPath(sumC)))
	os.WriteFile(filepath.Join(s.Root(), "sha256/objects/stray"), nil, 0o600)
	res, err = s.Verify(VerifyOptions{NoQuarantine: true})
	if err != nil || res.Index.Missing != 2 || res.Index.Wrong != 1 || len(res.Index.Strays) != 1 || res.OK() {
		t.Fatalf("verify (report only) of a damaged index: %+v %v", res.Index, err)
	}
	if res, err = s.Verify(VerifyOptions{}); err != nil || res.Index.Missing != 2 || !res.OK() {
		t.Fatalf("verify rebuilding: %+v %v", res.Index, err)
	}
	for p, c := range files {
		if !indexResolves(t, s, c) {
			t.Errorf("after rebuild: no index link for %s", p)
		}
	}
	if res, err = s.Verify(VerifyOptions{NoQuarantine: true}); err != nil || !res.Index.Complete() {
		t.Fatalf("verify after rebuild: %+v %v", res.Index, err)
	}

	// gc: after the transaction goes, its objects and their links go.
	if err := s.Remove([]uint64{tx.ID}, true); err != nil {
		t.Fatal(err)
	}
	gres, err := s.GC(GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gres.IndexLinksRemoved != 3 || gres.ObjectsRemoved != 3 {
		t.Errorf("gc removed %d links, %d objects; want 3, 3", gres.IndexLinksRemoved, gres.ObjectsRemoved)
	}
	for p, c := range files {
		if indexResolves(t, s, c) {
			t.Errorf("after gc: index link for %s remains", p)
		}
	}
	links, _, _ := s.walkIndex()
	if len(links) != 0 {
		t.Errorf("after gc: %d links remain", len(links))
	}
}

// TestIndexAfterRecovery tears an object as a crash before the store's
// sync could (a batch marker left by a dead writer, the object's bytes
// changed) and checks that the crash recovery at lock time and in gc, which
// quarantines the object, takes its sha256 index link too: the index never
// names an object the store lacks.
func TestIndexAfterRecovery(t *testing.T) {
	for _, how := range []string{"lock", "gc"} {
		t.Run(how, func(t *testing.T) {
			s := newState(t)
			src := t.TempDir()
			files := map[string]string{"torn": big("torn"), "kept": big("kept")}
			for p, c := range files {
				if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			im, err := s.NewImporter(stone.Format{})
			if err != nil {
				t.Fatal(err)
			}
			f, err := im.Tree(context.Background(), src, "")
			im.Close()
			if err != nil {
				t.Fatal(err)
			}
			f.Input = Input{Kind: KindTree, Name: "t"}
			compose(t, s, ComposeOptions{Add: []Fragment{f}})
			torn, ok := s.IndexLookup(sha256.Sum256([]byte(files["torn"])))
			if !ok {
				t.Fatal("no index link for the object to tear")
			}
			obj, err := os.OpenFile(s.Store().ObjectPath(torn), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := obj.WriteAt([]byte("torn by a crash"), 100); err != nil {
				t.Fatal(err)
			}
			obj.Close()
			// The marker a writer that died before its sync leaves: a batch
			// started a minute ago, its flock gone with the process.
			pending := filepath.Join(s.Store().Root(), "pending")
			os.MkdirAll(pending, 0o700)
			if err := os.WriteFile(filepath.Join(pending, "crashed"), []byte(strconv.FormatInt(time.Now().Add(-time.Minute).UnixNano(), 10)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if !s.Store().NeedsRecovery() {
				t.Fatal("the store does not see the crashed batch")
			}
			switch how {
			case "lock":
				lk, err := s.Lock()
				if err != nil {
					t.Fatal(err)
				}
				lk.Unlock()
			case "gc":
				if _, err := s.GC(GCOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if s.Store().Has(torn) {
				t.Fatal("recovery kept the torn object")
			}
			if _, err := os.Lstat(filepath.Join(s.Root(), IndexRelPath(sha256.Sum256([]byte(files["torn"]))))); err == nil {
				t.Error("the torn object's index link stayed")
			}
			if !indexResolves(t, s, files["kept"]) {
				t.Error("the intact object lost its index link")
			}
			res, err := s.Verify(VerifyOptions{NoQuarantine: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Index.OK() {
				t.Errorf("index after recovery: %+v", res.Index)
			}
		})
	}
}

// TestSHA256IndexInline: a tree's files small enough to be inlined in the
// EROFS image are kept as objects with index links too (so that partial
// pulls find them); gc keeps them while an image holds their content
// inline, and removes them with their links once none does.
func TestSHA256IndexInline(t *testing.T) {
	s := newState(t)
	src := t.TempDir()
	files := map[string]string{"tiny": "t", "small": strings.Repeat("s", 64), "big": big("big")}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := im.Tree(context.Background(), src, "")
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.Input = Input{Kind: KindTree, Name: "t"}
	tx := compose(t, s, ComposeOptions{Add: []Fragment{f}})
	// Still inline in the image: no redirect to an object.
	root, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	if n := root.Lookup("small"); n == nil || n.Payload != "" || string(n.Content) != files["small"] {
		t.Fatalf("small file in the image: %+v", n)
	}
	check := func(when string) {
		t.Helper()
		for p, c := range files {
			if !indexResolves(t, s, c) {
				t.Errorf("%s: no index link for %s", when, p)
			}
		}
		res, err := s.Verify(VerifyOptions{NoQuarantine: true})
		if err != nil || !res.OK() || !res.Index.Complete() || res.Index.Links != 3 {
			t.Errorf("%s: verify: %+v %+v %v", when, res, res.Index, err)
		}
	}
	check("after compose")
	g, err := s.GC(GCOptions{})
	if err != nil || g.ObjectsRemoved != 0 || g.IndexLinksRemoved != 0 {
		t.Fatalf("gc with the transaction: %+v %v", g, err)
	}
	check("after gc")
	if err := s.Remove([]uint64{tx.ID}, true); err != nil {
		t.Fatal(err)
	}
	if g, err = s.GC(GCOptions{}); err != nil || g.ObjectsRemoved != 3 || g.IndexLinksRemoved != 3 {
		t.Fatalf("gc without the transaction: %+v %v; want 3 objects and 3 links removed", g, err)
	}
}
