package stone

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sync"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// KnownContent remembers which XXH3-128 content digests the store already
// holds, and under which fs-verity digest, so that importing a stone whose
// contents are all known need not decompress anything.
type KnownContent interface {
	Lookup(xxh [16]byte) (digest [32]byte, ok bool)
	Record(xxh [16]byte, digest [32]byte) error
}

// objectChecker is the optional part of a sink that can tell whether an
// object exists (cas.Store): a known digest whose object is gone (removed by
// gc, say) is then stored again instead of trusted.
type objectChecker interface {
	Has(d [32]byte) bool
}

// Import reads the binary package at path, stores each content its layout
// uses in sink (nil: digests are only computed), each checked against its
// index digest before the sink can commit it, and returns the package and
// its tree. The tree's root is /usr: layout targets are relative to it.
// Contents that known already maps (and the sink still has) are not
// decompressed at all; the new ones are recorded in known (may be nil).
// On error, the sink holds only complete, correct objects.
func Import(ctx context.Context, path string, sink cas.ObjectSink, known KnownContent) (*Package, *tree.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("stone import: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stone import: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("stone import: %s is not a regular file", path)
	}
	p, err := Open(f, st.Size(), path)
	if err != nil {
		return nil, nil, err
	}
	if p.Prelude.FileType != FileBinary {
		return nil, nil, p.errorf(27, "file type %s, not a binary package", p.Prelude.FileType)
	}
	if p.Meta == nil {
		return nil, nil, p.errorf(-1, "no Meta payload")
	}
	if err := p.Meta.Validate(); err != nil {
		return nil, nil, p.errorf(-1, "meta: %v", err)
	}
	if err := p.Unreadable(); err != nil {
		return nil, nil, err
	}
	digests, err := p.storeContents(ctx, sink, known)
	if err != nil {
		return nil, nil, err
	}
	root, err := p.Tree(digests)
	if err != nil {
		return nil, nil, err
	}
	return p, root, nil
}

// storeContents returns the fs-verity digest of every non-empty content the
// layout uses, storing those not known.
func (p *Package) storeContents(ctx context.Context, sink cas.ObjectSink, known KnownContent) (map[XXH128][32]byte, error) {
	used := make(map[XXH128]bool)
	for _, e := range p.Layout {
		if e.Type == LayoutRegular && e.Digest != EmptyXXH128 {
			used[e.Digest] = true
		}
	}
	digests := make(map[XXH128][32]byte, len(used))
	checker, _ := sink.(objectChecker)
	missing := 0
	for x := range used {
		if known != nil {
			if d, ok := known.Lookup(x); ok && (checker == nil || checker.Has(d)) {
				digests[x] = d
				continue
			}
		}
		missing++
	}
	if missing == 0 {
		return digests, nil
	}
	fresh, err := p.putContents(ctx, sink, used, digests)
	if err != nil {
		return nil, err
	}
	for x := range used {
		if _, ok := digests[x]; !ok {
			return nil, p.errorf(-1, "content %s is used by the layout but has no index range", x)
		}
	}
	if known != nil && sink != nil {
		for _, x := range fresh {
			if err := known.Record(x, digests[x]); err != nil {
				return nil, fmt.Errorf("stone %s: recording content %s: %w", p.Name, x, err)
			}
		}
	}
	return digests, nil
}

// bufferedMax is the largest content read into memory and stored by a
// worker while the decompressor moves on; larger ones are streamed.
const bufferedMax = 1 << 20

// bytesSink is the optional part of a sink that stores a byte slice
// without copying it (cas.Store).
type bytesSink interface {
	PutBytes(b []byte) ([32]byte, error)
}

// putContents walks the content once, storing every used range not yet in
// digests (which it fills) and returning the XXH3-128s it stored. Small
// contents are verified in memory and stored by GOMAXPROCS workers, so the
// store's per-object system calls overlap decompression.
func (p *Package) putContents(ctx context.Context, sink cas.ObjectSink, used map[XXH128]bool, digests map[XXH128][32]byte) ([]XXH128, error) {
	var (
		mu       sync.Mutex
		fresh    []XXH128
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	done := func(x XXH128, d [32]byte) {
		mu.Lock()
		digests[x] = d
		fresh = append(fresh, x)
		mu.Unlock()
	}
	put := func(data []byte) ([32]byte, error) {
		switch s := sink.(type) {
		case nil:
			return fsverity.Sum(data), nil
		case bytesSink:
			return s.PutBytes(data)
		default:
			return sink.Put(bytes.NewReader(data))
		}
	}
	type job struct {
		x    XXH128
		data []byte
	}
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan job, workers)
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if failed() != nil {
					continue
				}
				d, err := put(j.data)
				if err != nil {
					fail(fmt.Errorf("stone %s: storing content %s: %w", p.Name, j.x, err))
					continue
				}
				done(j.x, d)
			}
		})
	}
	queued := map[XXH128]bool{}
	err := p.WalkContent(ctx, func(e IndexEntry, r io.Reader) error {
		if err := failed(); err != nil {
			return err
		}
		if !used[e.Digest] || queued[e.Digest] {
			return nil
		}
		mu.Lock()
		_, have := digests[e.Digest]
		mu.Unlock()
		if have {
			return nil
		}
		queued[e.Digest] = true
		if e.Size() <= bufferedMax {
			data := make([]byte, e.Size())
			// The range reader verifies the XXH3-128 as it reaches the end,
			// so only verified bytes reach a worker.
			if _, err := io.ReadFull(r, data); err != nil {
				return err
			}
			jobs <- job{e.Digest, data}
			return nil
		}
		var d [32]byte
		var err error
		if sink != nil {
			d, err = sink.Put(r)
		} else {
			d, err = fsverity.DigestReader(r)
		}
		if err != nil {
			return fmt.Errorf("stone %s: storing content %s: %w", p.Name, e.Digest, err)
		}
		done(e.Digest, d)
		return nil
	})
	close(jobs)
	wg.Wait()
	if err == nil {
		err = firstErr
	}
	return fresh, err
}

// Tree builds the package's tree, rooted at /usr, from its layout and the
// fs-verity digests of its contents (by XXH3-128). Parent directories not in
// the layout are root:root 0755; every mtime is 0; devices, fifos and
// sockets are left out, as moss does; regular files are external (Payload
// and Digest), empty ones have neither. Should a path occur twice, the
// first entry wins, except that a directory entry gives its metadata to a
// directory made implicitly for an earlier entry.
func (p *Package) Tree(digests map[XXH128][32]byte) (*tree.Node, error) {
	if err := p.Unreadable(); err != nil {
		return nil, err
	}
	sizes := make(map[XXH128]uint64, len(p.Index))
	for _, e := range p.Index {
		sizes[e.Digest] = e.Size() // checkIndex made sizes agree per digest
	}
	root := tree.NewDir("", 0o755)
	nodes := map[string]*tree.Node{"": root}
	explicit := map[string]bool{}
	var dirOf func(string) (*tree.Node, error)
	dirOf = func(dir string) (*tree.Node, error) {
		if n := nodes[dir]; n != nil {
			if n.Mode&tree.TypeMask != tree.TypeDir {
				return nil, p.errorf(-1, "layout: %s is not a directory (mode %o) but has entries below it", dir, n.Mode)
			}
			return n, nil
		}
		parent, err := dirOf(parentDir(dir))
		if err != nil {
			return nil, err
		}
		n := tree.NewDir(path.Base(dir), 0o755)
		parent.AddChild(n)
		nodes[dir] = n
		return n, nil
	}
	for _, e := range p.Layout {
		var n *tree.Node
		perm := e.Mode & 0o7777
		switch e.Type {
		case LayoutRegular:
			n = &tree.Node{Mode: tree.TypeReg | perm, Nlink: 1}
			if e.Digest != EmptyXXH128 {
				d, ok := digests[e.Digest]
				if !ok {
					return nil, p.errorf(-1, "layout: %s: no fs-verity digest for content %s", e.Target, e.Digest)
				}
				n.Size = sizes[e.Digest]
				n.Digest = d[:]
				n.Payload = cas.Payload(d)
			}
		case LayoutSymlink:
			n = &tree.Node{Mode: tree.TypeLink | perm, Nlink: 1, Target: e.Source, Size: uint64(len(e.Source))}
		case LayoutDirectory:
			if old := nodes[e.Target]; old != nil {
				if old.Mode&tree.TypeMask == tree.TypeDir && !explicit[e.Target] {
					old.Mode, old.UID, old.GID = tree.TypeDir|perm, e.UID, e.GID
					explicit[e.Target] = true
				}
				continue
			}
			n = tree.NewDir("", perm)
			explicit[e.Target] = true
		default:
			continue // devices, fifos, sockets: moss skips them
		}
		if nodes[e.Target] != nil {
			continue // the first entry for a path wins
		}
		parent, err := dirOf(parentDir(e.Target))
		if err != nil {
			return nil, err
		}
		n.Name = path.Base(e.Target)
		n.UID, n.GID = e.UID, e.GID
		parent.AddChild(n)
		nodes[e.Target] = n
	}
	root.Sort()
	_ = root.Walk(func(n *tree.Node) error {
		if n.IsDir() {
			n.Nlink = 2
			for _, c := range n.Children {
				if c.IsDir() {
					n.Nlink++
				}
			}
		}
		return nil
	})
	return root, nil
}

func parentDir(target string) string {
	d := path.Dir(target)
	if d == "." {
		return ""
	}
	return d
}
