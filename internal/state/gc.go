package state

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/tree"
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
}

// GC removes everything no retained transaction needs. Roots are every
// existing transaction, pinned transactions and images, and the active and
// mounted ones (mount records carry the image, so a mounted transaction
// removed with force keeps its image and objects). Live objects are marked
// from the images themselves, read with the erofs reader (the payloads of
// external files). It holds the exclusive lock, so no import or compose is
// in flight: whatever is not referenced is garbage.
func (s *State) GC(opts GCOptions) (*GCResult, error) {
	lk, err := s.lockBoth(true, opts.Wait)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	defer lk.Unlock()
	// Objects of a batch that a crash left unsynced are re-hashed first
	// (bad ones quarantined), so a torn object is never kept as live.
	if _, err := s.store.Recover(context.Background(), cas.VerifyOptions{}); err != nil {
		return nil, fmt.Errorf("gc: recovering the store: %w", err)
	}
	// Removals are not synced one by one: make them durable before
	// deleting what they released, or a power failure could bring back a
	// transaction whose objects are gone.
	if !opts.DryRun {
		if err := syncfs(s.root); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
	}
	res := &GCResult{DryRun: opts.DryRun, Transactions: []uint64{}, Images: []string{},
		ImagesRemoved: []string{}, InputsRemoved: []uint64{}}

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

	// Mark.
	live := map[[32]byte]struct{}{}
	for h := range images {
		res.Images = append(res.Images, h)
		if err := s.markImage(filepath.Join(s.ImagesDir(), h), live); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
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

	// Sweep objects.
	type deadObject struct {
		d    [32]byte
		size int64
	}
	var dead []deadObject
	err = s.store.Walk(func(d [32]byte, size int64) error {
		res.Objects++
		if _, ok := live[d]; ok {
			res.ObjectsLive++
			return nil
		}
		dead = append(dead, deadObject{d, size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for i, o := range dead {
		if !opts.DryRun {
			if err := s.store.Remove(o.d); err != nil {
				return nil, fmt.Errorf("gc: %w", err)
			}
			if i == len(dead)/2 {
				crash(CPGCSweep)
			}
		}
		res.ObjectsRemoved++
		res.BytesRemoved += o.size
		if opts.Progress != nil && i%1024 == 0 {
			opts.Progress(i, len(dead))
		}
	}
	if opts.Progress != nil {
		opts.Progress(len(dead), len(dead))
	}
	return res, nil
}

// markImage adds the objects of every external file of an image to live.
func (s *State) markImage(path string, live map[[32]byte]struct{}) error {
	root, err := readImageTree(path)
	if err != nil {
		return fmt.Errorf("retained image: %w", err)
	}
	return root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.Payload != "" {
			d, err := cas.ParsePayload(n.Payload)
			if err != nil {
				return fmt.Errorf("retained image %s: %s: %w", path, n.Path(), err)
			}
			live[d] = struct{}{}
		}
		return nil
	})
}

// readImageTree reads an image file's tree with the erofs reader.
func readImageTree(path string) (*tree.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	img, err := erofs.Open(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	root, err := img.Tree()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return root, nil
}
