package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mossfs/mossfs/cas"
)

// The sha256 index names every object of the content store by the plain
// sha256 of its content, beside the store rather than in it (cas/objects
// stays a clean composefs digest store):
//
//	sha256/objects/xx/<62 hex>.payload-link -> ../../../cas/objects/yy/<62 hex>
//
// This is the layout containers/storage reads through its ostree_repos pull
// option (repo = ROOT/sha256), and what OCI pulls look content up in. It is
// kept current: objects stored through IndexedSink get their link when they
// are stored, before anything that references them is published (links are
// made durable by the same syncfs as the objects); gc removes the links of
// the objects it sweeps, syncs, and only then removes the objects; Verify
// checks every link and rebuilds what is missing or wrong.

// SHA256Dir is the directory holding the index's objects/ (the "repo" of
// containers/storage's ostree_repos option).
func (s *State) SHA256Dir() string { return filepath.Join(s.root, "sha256") }

func (s *State) indexDir() string { return filepath.Join(s.root, "sha256", "objects") }

// IndexRelPath is the path of content sha's index link relative to the
// state root.
func IndexRelPath(sha [32]byte) string {
	h := hex.EncodeToString(sha[:])
	return "sha256/objects/" + h[:2] + "/" + h[2:] + ".payload-link"
}

// indexTarget is the link's relative target: from sha256/objects/xx/ up to
// the state root, then into the store.
func indexTarget(verity [32]byte) string { return "../../../cas/objects/" + cas.Payload(verity) }

// parseIndexTarget returns the object a link target names.
func parseIndexTarget(t string) ([32]byte, bool) {
	p, ok := strings.CutPrefix(t, "../../../cas/objects/")
	if !ok {
		return [32]byte{}, false
	}
	d, err := cas.ParsePayload(p)
	return d, err == nil
}

// parseIndexName parses "<62 hex>.payload-link" in fan-out directory xx.
func parseIndexName(fan, name string) ([32]byte, bool) {
	h, ok := strings.CutSuffix(name, ".payload-link")
	if !ok || len(fan) != 2 {
		return [32]byte{}, false
	}
	d, err := cas.ParseDigest(fan + h)
	return d, err == nil && strings.ToLower(fan+h) == fan+h
}

// IndexAdd links content sha to object verity (replacing a link that names
// another object). Directories are created private.
func (s *State) IndexAdd(sha, verity [32]byte) error {
	if !s.indexFan[sha[0]].Load() {
		if _, err := MkdirPrivate(s.root, filepath.Dir(IndexRelPath(sha))); err != nil {
			return fmt.Errorf("sha256 index: %w", err)
		}
		s.indexFan[sha[0]].Store(true)
	}
	path := filepath.Join(s.root, IndexRelPath(sha))
	target := indexTarget(verity)
	err := os.Symlink(target, path)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		if err != nil {
			return fmt.Errorf("sha256 index: %w", err)
		}
		return s.recordSHA(verity, sha)
	}
	if have, err := os.Readlink(path); err == nil && have == target {
		return nil
	}
	tmp := path + ".tmp-" + hex.EncodeToString(verity[:4])
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("sha256 index: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sha256 index: %w", err)
	}
	return s.recordSHA(verity, sha)
}

// IndexLookup returns the object holding content sha, if the index links
// it to an object the store has.
func (s *State) IndexLookup(sha [32]byte) ([32]byte, bool) {
	t, err := os.Readlink(filepath.Join(s.root, IndexRelPath(sha)))
	if err != nil {
		return [32]byte{}, false
	}
	d, ok := parseIndexTarget(t)
	if !ok || !s.store.Has(d) {
		return [32]byte{}, false
	}
	return d, true
}

// IndexedSink is the content store as importers see it: every object
// stored through it gets its sha256 index link as it is stored.
func (s *State) IndexedSink() cas.ObjectSink { return indexedSink{s} }

type indexedSink struct{ s *State }

func (x indexedSink) Put(r io.Reader) ([32]byte, error) {
	h := sha256.New()
	d, err := x.s.store.Put(io.TeeReader(r, h))
	if err != nil {
		return d, err
	}
	var sha [32]byte
	h.Sum(sha[:0])
	return d, x.s.IndexAdd(sha, d)
}

// Has and PutBytes keep the store's shortcuts visible to importers that
// look for them (stone: Has before trusting its known-content index).
func (x indexedSink) Has(d [32]byte) bool { return x.s.store.Has(d) }

func (x indexedSink) PutBytes(b []byte) ([32]byte, error) {
	d, err := x.s.store.PutBytes(b)
	if err != nil {
		return d, err
	}
	return d, x.s.IndexAdd(sha256.Sum256(b), d)
}

func (x indexedSink) PutFile(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, fmt.Errorf("storing object: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return [32]byte{}, fmt.Errorf("storing object: hashing %s: %w", path, err)
	}
	d, err := x.s.store.PutFile(path)
	if err != nil {
		return d, err
	}
	var sha [32]byte
	h.Sum(sha[:0])
	return d, x.s.IndexAdd(sha, d)
}

// indexLink is one entry of the index.
type indexLink struct {
	sha    [32]byte
	target [32]byte
	ok     bool   // target parsed
	rel    string // path relative to the state root
}

// walkIndex lists the index's links; entries that are not links of the
// index's form are returned as strays (paths relative to the state root).
func (s *State) walkIndex() (links []indexLink, strays []string, err error) {
	top, err := os.ReadDir(s.indexDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sha256 index: %w", err)
	}
	for _, fan := range top {
		rel := "sha256/objects/" + fan.Name()
		if !fan.IsDir() || len(fan.Name()) != 2 {
			strays = append(strays, rel)
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.root, rel))
		if err != nil {
			return nil, nil, fmt.Errorf("sha256 index: %w", err)
		}
		for _, e := range ents {
			erel := rel + "/" + e.Name()
			sha, ok := parseIndexName(fan.Name(), e.Name())
			if !ok || e.Type()&fs.ModeSymlink == 0 {
				strays = append(strays, erel)
				continue
			}
			l := indexLink{sha: sha, rel: erel}
			if t, err := os.Readlink(filepath.Join(s.root, erel)); err == nil {
				l.target, l.ok = parseIndexTarget(t)
			}
			links = append(links, l)
		}
	}
	return links, strays, nil
}

// sweepIndex removes the links whose object is not in keep (dead or
// missing objects, unreadable links), for gc before it removes objects.
func (s *State) sweepIndex(keep func(d [32]byte) bool, dryRun bool) (int, error) {
	links, _, err := s.walkIndex()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range links {
		if l.ok && keep(l.target) {
			continue
		}
		n++
		if !dryRun {
			if err := os.Remove(filepath.Join(s.root, l.rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("sha256 index: %w", err)
			}
		}
	}
	return n, nil
}

// IndexReport says what checking the index found (and, rebuilding, fixed).
type IndexReport struct {
	Links int `json:"links"`
	// Missing: objects with no link; Wrong: links to another object, to a
	// missing one, or not of the index's form; Strays: other entries.
	Missing int      `json:"missing"`
	Wrong   int      `json:"wrong"`
	Strays  []string `json:"strays,omitempty"`
	// WrongSHA256Records: records of the object sha256 log (objectsha.go)
	// that give an object another sha256 than its content's, or a log
	// that cannot be read.
	WrongSHA256Records int  `json:"wrong_sha256_records"`
	Rebuilt            bool `json:"rebuilt"`
}

// OK reports whether every link of the index was right: none names a
// missing object or another content. Objects without a link (Missing) are
// not wrong: a gc interrupted after removing the links of its garbage
// leaves such objects, which the next gc removes; a rebuild links them.
func (r *IndexReport) OK() bool {
	return r.Wrong == 0 && len(r.Strays) == 0 && r.WrongSHA256Records == 0
}

// Complete reports whether every object had its link, too.
func (r *IndexReport) Complete() bool { return r.OK() && r.Missing == 0 }

// checkIndex hashes every object with sha256 and compares the index with
// what it should be; with rebuild it adds missing links and removes wrong
// ones and strays. The caller holds the store lock.
func (s *State) checkIndex(ctx context.Context, threads int, rebuild bool) (*IndexReport, error) {
	var objs [][32]byte
	if err := s.store.Walk(func(d [32]byte, _ int64) error { objs = append(objs, d); return nil }); err != nil {
		return nil, fmt.Errorf("sha256 index: %w", err)
	}
	want := make([][32]byte, len(objs)) // sha256 of each object
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, threads)
	for w := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(objs) || ctx.Err() != nil {
					return
				}
				f, err := s.store.Open(objs[i])
				if err != nil {
					errs[w] = fmt.Errorf("sha256 index: %w", err)
					return
				}
				h := sha256.New()
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil {
					errs[w] = fmt.Errorf("sha256 index: reading object %s: %w", cas.Payload(objs[i]), err)
					return
				}
				h.Sum(want[i][:0])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	expected := make(map[[32]byte][32]byte, len(objs)) // sha -> object
	for i, d := range objs {
		expected[want[i]] = d
	}
	links, strays, err := s.walkIndex()
	if err != nil {
		return nil, err
	}
	rep := &IndexReport{Links: len(links), Strays: strays, Rebuilt: rebuild}
	if err := s.flushSHALog(); err != nil {
		return nil, err
	}
	if data, err := os.ReadFile(s.shaLogPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("object sha256 log: %w", err)
	} else if recs, conflicts, err := parseSHALog(data, s.shaLogPath()); err != nil && data != nil {
		rep.WrongSHA256Records++
	} else {
		rep.WrongSHA256Records += conflicts
		shaOf := make(map[[32]byte][32]byte, len(objs))
		for i, d := range objs {
			shaOf[d] = want[i]
		}
		for d, sha := range recs {
			if w, ok := shaOf[d]; ok && w != sha {
				rep.WrongSHA256Records++
			}
		}
	}
	have := make(map[[32]byte]bool, len(links))
	for _, l := range links {
		if d, ok := expected[l.sha]; ok && l.ok && bytes.Equal(d[:], l.target[:]) {
			have[l.sha] = true
			continue
		}
		rep.Wrong++
		if rebuild {
			if err := os.Remove(filepath.Join(s.root, l.rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("sha256 index: %w", err)
			}
		}
	}
	for sha, d := range expected {
		if have[sha] {
			continue
		}
		rep.Missing++
		if rebuild {
			if err := s.IndexAdd(sha, d); err != nil {
				return nil, err
			}
		}
	}
	if rebuild {
		// The log anew: every object's record, and only those.
		if err := s.writeSHALog(objs, want); err != nil {
			return nil, err
		}
		for _, p := range strays {
			if err := os.RemoveAll(filepath.Join(s.root, p)); err != nil {
				return nil, fmt.Errorf("sha256 index: %w", err)
			}
		}
		if err := s.Sync(); err != nil {
			return nil, fmt.Errorf("sha256 index: %w", err)
		}
	}
	return rep, nil
}
