package state

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/cas"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// VerifyOptions control Verify.
type VerifyOptions struct {
	// Tx limits the check to one transaction's image and objects (0: all).
	Tx uint64
	// NoQuarantine reports bad objects without moving them away.
	NoQuarantine bool
	// Threads re-hashing objects; <= 0 means one per CPU.
	Threads int
	// Progress, if set, is called (never concurrently) as objects are checked.
	Progress func(p cas.VerifyProgress)
}

// MissingObject is an object an image references that the store lacks.
type MissingObject struct {
	Tx     uint64 `json:"tx"`
	Object string `json:"object"`
	Path   string `json:"path"`
}

// BadImage is a transaction whose image is missing, unreadable or does not
// match its digest.
type BadImage struct {
	Tx     uint64 `json:"tx"`
	Image  string `json:"image"`
	Reason string `json:"reason"`
}

// VerifyResult reports a verification.
type VerifyResult struct {
	Scope        string `json:"scope"`
	Objects      int    `json:"objects"`
	Bytes        int64  `json:"bytes"`
	Transactions int    `json:"transactions"`
	// Corrupt objects (moved to the store's quarantine unless NoQuarantine).
	Corrupt   []cas.BadObject `json:"corrupt"`
	Missing   []MissingObject `json:"missing"`
	BadImages []BadImage      `json:"bad_images"`
	// Strays are entries of the objects directory that are not objects.
	Strays []string `json:"strays,omitempty"`
	// Exposed are entries of the state root that users other than its
	// owner can reach beyond PublicRecords ("path (mode 0755)").
	Exposed []string `json:"exposed,omitempty"`
	// MadePrivate are the entries opening the state root found exposed and
	// made private (an older store, or code that forgot perm.go's rule).
	MadePrivate []string `json:"made_private,omitempty"`
	// Index is the check of the sha256 index (whole-store verifies only):
	// rebuilt unless NoQuarantine asked for a report only.
	Index *IndexReport `json:"sha256_index,omitempty"`
}

// OK reports whether nothing was found wrong.
func (r *VerifyResult) OK() bool {
	return len(r.Corrupt) == 0 && len(r.Missing) == 0 && len(r.BadImages) == 0 && len(r.Exposed) == 0 &&
		(r.Index == nil || r.Index.Rebuilt || r.Index.OK())
}

// Verify re-hashes objects (all of them, or those one transaction uses),
// moves corrupt ones to the store's quarantine, and checks that every image
// checked matches its digest and that all the objects it references are
// present. Verifying the whole store also checks the sha256 index against
// the objects' contents and rebuilds it (with NoQuarantine: reports only).
func (s *State) Verify(opts VerifyOptions) (*VerifyResult, error) {
	lk, err := s.Lock() // keeps gc away, so "missing" means missing
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	res := &VerifyResult{Scope: "all", Corrupt: []cas.BadObject{}, Missing: []MissingObject{}, BadImages: []BadImage{},
		MadePrivate: s.madePrivate}
	if res.Exposed, err = Exposed(s.root); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var txs []*Transaction
	if opts.Tx != 0 {
		tx, err := s.Get(opts.Tx)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		txs = []*Transaction{tx}
		res.Scope = fmt.Sprintf("transaction %d", opts.Tx)
	} else if txs, err = s.List(); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	res.Transactions = len(txs)

	// Images: digest and references.
	refs := map[[32]byte]refInfo{}
	for _, tx := range txs {
		data, err := os.ReadFile(s.ImagePath(tx))
		if err != nil {
			res.BadImages = append(res.BadImages, BadImage{Tx: tx.ID, Image: tx.Image, Reason: err.Error()})
			continue
		}
		if d := fsverity.Sum(data); hex.EncodeToString(d[:]) != tx.Image {
			res.BadImages = append(res.BadImages, BadImage{Tx: tx.ID, Image: tx.Image, Reason: "fs-verity digest is " + hex.EncodeToString(d[:])})
			continue
		}
		img, err := erofs.Open(bytes.NewReader(data))
		var root *tree.Node
		if err == nil {
			root, err = img.Tree()
		}
		if err == nil {
			err = root.Walk(func(n *tree.Node) error {
				if n.LinkTo == nil && n.Payload != "" {
					d, err := cas.ParsePayload(n.Payload)
					if err != nil {
						return fmt.Errorf("%s: %w", n.Path(), err)
					}
					if _, ok := refs[d]; !ok {
						refs[d] = refInfo{tx: tx.ID, path: n.Path()}
					}
				}
				return nil
			})
		}
		if err != nil {
			res.BadImages = append(res.BadImages, BadImage{Tx: tx.ID, Image: tx.Image, Reason: err.Error()})
		}
	}
	for d, r := range refs {
		if !s.store.Has(d) {
			res.Missing = append(res.Missing, MissingObject{Tx: r.tx, Object: cas.Payload(d), Path: r.path})
		}
	}
	slices.SortFunc(res.Missing, func(a, b MissingObject) int { return strings.Compare(a.Object, b.Object) })

	vo := cas.VerifyOptions{Workers: opts.Threads, NoQuarantine: opts.NoQuarantine, Progress: opts.Progress}
	if opts.Tx != 0 {
		vo.Digests = [][32]byte{}
		for d := range refs {
			if s.store.Has(d) {
				vo.Digests = append(vo.Digests, d)
			}
		}
		slices.SortFunc(vo.Digests, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	}
	rep, err := s.store.VerifyAll(context.Background(), vo)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	res.Objects, res.Bytes, res.Strays = rep.Checked, rep.Bytes, rep.Strays
	if rep.Bad != nil {
		res.Corrupt = rep.Bad
	}
	if len(rep.Bad) > 0 {
		crash(CPVerifyQuarantine)
	}
	if opts.Tx == 0 {
		// After quarantine: links to quarantined objects are wrong now.
		if res.Index, err = s.checkIndex(context.Background(), opts.Threads, !opts.NoQuarantine); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	return res, nil
}

type refInfo struct {
	tx   uint64
	path string
}
