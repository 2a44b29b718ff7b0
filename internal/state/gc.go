package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// GCOptions control a garbage collection.
type GCOptions struct {
	// DryRun reports what would be removed without removing anything.
	DryRun bool
	// Wait for a running import or compose instead of failing.
	Wait bool
	// Progress, if set, is called with objects swept so far and the total.
	Progress func(done, total int)
}

// GCResult reports a garbage collection.
type GCResult struct {
	DryRun bool `json:"dry_run"`
	// Roots: the transactions and images kept.
	Transactions []uint64 `json:"transactions"`
	Images       []string `json:"images"`
	// Objects found, kept (referenced by a kept image) and removed.
	Objects        int   `json:"objects"`
	ObjectsLive    int   `json:"objects_live"`
	ObjectsRemoved int   `json:"objects_removed"`
	BytesRemoved   int64 `json:"bytes_removed"`
	// ImagesRemoved: images no kept transaction, pin or mount refers to.
	ImagesRemoved []string `json:"images_removed"`
	// InputsRemoved: fragment directories of transactions that no longer
	// (or never completely) exist; TempRemoved: leftover temporary files.
	InputsRemoved []uint64 `json:"inputs_removed"`
	TempRemoved   int      `json:"temp_removed"`
	// StagingRemoved: staging directories of partial pulls that crashed
	// (<root>/.partial-*, held by no live process).
	StagingRemoved int `json:"staging_removed"`
	// IndexLinksRemoved: sha256 index links of removed (or missing) objects.
	IndexLinksRemoved int `json:"index_links_removed"`
}

// GC removes everything no retained transaction needs. Roots are every
// existing transaction, container image record, pinned transactions and images, and the active and
// mounted ones (mount records carry the image, so a mounted transaction
// removed with force keeps its image and objects). Live objects are marked
// from the images themselves, read with the erofs reader (the payloads of
// external files, and the digests of inline contents, which importers keep
// as objects too so that the sha256 index offers them to partial pulls). It holds the exclusive lock, so no import or compose is
// in flight: whatever is not referenced is garbage.
func (s *State) GC(opts GCOptions) (*GCResult, error) {
	lk, err := s.lockBoth(true, opts.Wait)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	defer lk.Unlock()
	// Objects of a batch that a crash left unsynced are re-hashed first
	// (bad ones quarantined), so a torn object is never kept as live.
	if err := s.recoverStore(); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	// What crashed pulls left: staging directories no live process holds,
	// and spool files (pulls hold the shared lock while they have any).
	staged, err := s.sweepStaging(opts.DryRun)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	spooled, err := s.sweepSpool(opts.DryRun)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	// Removals unlink metadata without fsync: make them durable before
	// deleting what they released, or a power failure could bring back a
	// transaction whose fragments or objects are gone. (Published
	// transactions are durable already.)
	if !opts.DryRun {
		if err := fsyncDir(s.txDir()); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
	}
	res := &GCResult{DryRun: opts.DryRun, Transactions: []uint64{}, Images: []string{},
		ImagesRemoved: []string{}, InputsRemoved: []uint64{}, StagingRemoved: staged, TempRemoved: spooled}

	// Roots.
	txs, err := s.List()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	images := map[string]bool{}
	existing := map[uint64]bool{}
	for _, tx := range txs {
		existing[tx.ID] = true
		res.Transactions = append(res.Transactions, tx.ID)
		images[tx.Image] = true
	}
	_, pinnedImages, err := s.Pins()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, h := range pinnedImages {
		images[h] = true
	}
	containerImages, err := s.containerRoots(opts.DryRun)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, h := range containerImages {
		images[h] = true
	}
	mounts, err := s.Mounts()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, m := range mounts {
		if m.Image != "" {
			images[strings.ToLower(m.Image)] = true
		} else if !existing[m.Tx] {
			return nil, fmt.Errorf("gc: mount record %s names transaction %d, which does not exist, and no image: refusing to guess what it needs", m.Name, m.Tx)
		}
	}

	// Mark, images in parallel, while the store is walked: under the
	// exclusive lock no object appears or goes meanwhile.
	type object struct {
		d    [32]byte
		size int64
	}
	var all []object
	walked := make(chan error, 1)
	go func() {
		walked <- s.store.Walk(func(d [32]byte, size int64) error {
			all = append(all, object{d, size})
			return nil
		})
	}()
	var paths []string
	for h := range images {
		res.Images = append(res.Images, h)
		paths = append(paths, filepath.Join(s.ImagesDir(), h))
	}
	live, err := markImages(paths)
	if werr := <-walked; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	slices.Sort(res.Images)

	// Sweep images, orphaned fragments and temporary files.
	ents, err := os.ReadDir(s.ImagesDir())
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			res.TempRemoved++
			if !opts.DryRun {
				os.Remove(filepath.Join(s.ImagesDir(), name))
			}
			continue
		}
		if images[name] {
			continue
		}
		res.ImagesRemoved = append(res.ImagesRemoved, name)
		if !opts.DryRun {
			if err := os.Remove(filepath.Join(s.ImagesDir(), name)); err != nil {
				return nil, fmt.Errorf("gc: %w", err)
			}
		}
	}
	crash(CPGCImages)
	ents, err = os.ReadDir(s.txDir())
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(s.txDir(), name)
		if strings.HasPrefix(name, ".tmp-") {
			res.TempRemoved++
			if !opts.DryRun {
				os.RemoveAll(p)
			}
			continue
		}
		if num, ok := strings.CutSuffix(name, ".inputs"); ok {
			id, err := strconv.ParseUint(num, 10, 64)
			if err == nil && !existing[id] {
				res.InputsRemoved = append(res.InputsRemoved, id)
				if !opts.DryRun {
					if err := os.RemoveAll(p); err != nil {
						return nil, fmt.Errorf("gc: %w", err)
					}
				}
			}
		}
	}

	// Sweep objects, on several goroutines (unlinks in different fan-out
	// directories proceed in parallel).
	var dead []object
	for _, o := range all {
		res.Objects++
		if _, ok := live[o.d]; ok {
			res.ObjectsLive++
			continue
		}
		dead = append(dead, o)
		res.ObjectsRemoved++
		res.BytesRemoved += o.size
	}
	// The sha256 index never names a removed object: its links go first,
	// and are durably gone before the objects are.
	isLive := func(d [32]byte) bool { _, ok := live[d]; return ok }
	if res.IndexLinksRemoved, err = s.sweepIndex(isLive, opts.DryRun); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if opts.DryRun {
		return res, nil
	}
	if res.IndexLinksRemoved > 0 {
		if err := s.Sync(); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
	}
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		wg         sync.WaitGroup
		errs       = make([]error, 4)
	)
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(dead) {
					return
				}
				if err := s.store.Remove(dead[i].d); err != nil {
					errs[w] = err
					return
				}
				n := done.Add(1)
				if n == int64(len(dead)/2+1) {
					crash(CPGCSweep)
				}
				if opts.Progress != nil && (n%1024 == 0 || n == int64(len(dead))) {
					mu.Lock()
					opts.Progress(int(n), len(dead))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	// The object sha256 log keeps the records of the objects that stay.
	if len(dead) > 0 {
		if err := s.compactSHALog(isLive); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
	}
	return res, nil
}

// markImages returns the objects of every external file of the images,
// reading them on all cores.
func markImages(paths []string) (map[[32]byte]struct{}, error) {
	lists := make([][][32]byte, len(paths))
	errs := make([]error, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.NumCPU(), len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(paths) {
					return
				}
				lists[i], errs[i] = imageObjects(paths[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	n := 0
	for _, l := range lists {
		n = max(n, len(l))
	}
	live := make(map[[32]byte]struct{}, n)
	for _, l := range lists {
		for _, d := range l {
			live[d] = struct{}{}
		}
	}
	return live, nil
}

// imageObjects lists the objects an image's external files use, and the
// objects importers keep for its inline files (named by the digest of the
// inline content: see IndexedSink and dirimport.Options.KeepInline). It walks
// directories by nid and decodes only regular files' inodes (their
// redirect), each once, instead of building the whole tree.
func imageObjects(path string) ([][32]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("retained image: %w", err)
	}
	img, err := erofs.Open(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("retained image %s: %w", path, err)
	}
	var out [][32]byte
	var inline [dirimport.InlineMax]byte
	seen := map[uint64]bool{}
	var walk func(dir uint64, depth int) error
	walk = func(dir uint64, depth int) error {
		if depth > 4096 {
			return fmt.Errorf("retained image %s: directories nested too deep", path)
		}
		ents, err := img.ReadDirNid(dir)
		if err != nil {
			return fmt.Errorf("retained image %s: %w", path, err)
		}
		for _, e := range ents {
			if seen[e.Nid] || e.Type != 0 && e.Type != tree.TypeDir && e.Type != tree.TypeReg {
				continue
			}
			seen[e.Nid] = true
			typ := e.Type
			if typ == tree.TypeDir {
				if err := walk(e.Nid, depth+1); err != nil {
					return err
				}
				continue
			}
			ino, err := img.Inode(e.Nid)
			if err != nil {
				return fmt.Errorf("retained image %s: %s: %w", path, e.Name, err)
			}
			switch ino.Mode & tree.TypeMask {
			case tree.TypeDir:
				if err := walk(e.Nid, depth+1); err != nil {
					return err
				}
			case tree.TypeReg:
				if ino.Payload != "" {
					d, err := cas.ParsePayload(ino.Payload)
					if err != nil {
						return fmt.Errorf("retained image %s: %s: %w", path, e.Name, err)
					}
					out = append(out, d)
				} else if ino.HasInline && ino.Size <= dirimport.InlineMax {
					// Importers keep inline contents as objects too (for
					// the sha256 index): the image holds them by content.
					n, err := img.ReadAt(e.Nid, inline[:ino.Size], 0)
					if err != nil || n != int(ino.Size) {
						return fmt.Errorf("retained image %s: %s: reading inline content: %d bytes, %v", path, e.Name, n, err)
					}
					out = append(out, fsverity.Sum(inline[:n]))
				}
			}
		}
		return nil
	}
	seen[img.RootNid()] = true
	return out, walk(img.RootNid(), 0)
}

// readImageTree reads an image file's tree with the erofs reader.
func readImageTree(path string) (*tree.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	img, err := erofs.OpenBytes(data, nil) // read in place: no block copies
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	root, err := img.Tree()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return root, nil
}

// SpoolPrefix begins the names of the temporary files a pull spools large
// contents to, in the content store's root (beside objects/, on its file
// system).
const SpoolPrefix = ".spool-"

// sweepSpool removes spool files; the caller holds the exclusive lock, so
// no pull that could own one is running.
func (s *State) sweepSpool(dryRun bool) (int, error) {
	ents, err := os.ReadDir(s.store.Root())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), SpoolPrefix) || e.IsDir() {
			continue
		}
		n++
		if !dryRun {
			if err := os.Remove(filepath.Join(s.store.Root(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, err
			}
		}
	}
	return n, nil
}
