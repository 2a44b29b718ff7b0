package state

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ProtectedError lists transactions a removal refused to touch.
type ProtectedError struct {
	Why map[uint64]string
}

func (e *ProtectedError) Error() string {
	ids := make([]uint64, 0, len(e.Why))
	for id := range e.Why {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%d (%s)", id, e.Why[id]))
	}
	return "refusing to remove " + strings.Join(parts, ", ") + " without --force"
}

// Protected returns the transactions that must not be removed without
// force, and why: the active one, every mounted one and pinned ones.
func (s *State) Protected() (map[uint64]string, error) {
	why := map[uint64]string{}
	active, err := s.Active()
	if err != nil {
		return nil, err
	}
	if active != 0 {
		why[active] = "active"
	}
	pinned, _, err := s.Pins()
	if err != nil {
		return nil, err
	}
	for _, id := range pinned {
		if old, ok := why[id]; ok {
			why[id] = old + ", pinned"
		} else {
			why[id] = "pinned"
		}
	}
	mounts, err := s.Mounts()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if m.Tx == 0 {
			continue // an image mounted directly
		}
		w := "mounted"
		if m.Target != "" {
			w += " at " + m.Target
		}
		if old, ok := why[m.Tx]; ok {
			w = old + ", " + w
		}
		why[m.Tx] = w
	}
	return why, nil
}

// Remove deletes transactions: it unlinks their metadata, after which they
// no longer exist. Their fragments, images and objects are left for gc,
// which first makes the unlinks durable: a removal a power failure undoes
// brings the transaction back whole, never half.
// Without force, removing the active or a mounted transaction is refused
// and nothing is removed. Unknown ids are an error (nothing removed).
func (s *State) Remove(ids []uint64, force bool) error {
	l, err := s.txLock()
	if err != nil {
		return err
	}
	defer l.Unlock()
	for _, id := range ids {
		if _, err := os.Lstat(s.metaPath(id)); err != nil {
			return fmt.Errorf("remove: transaction %d: %w", id, ErrNotFound)
		}
	}
	if !force {
		prot, err := s.Protected()
		if err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		refused := map[uint64]string{}
		for _, id := range ids {
			if w, ok := prot[id]; ok {
				refused[id] = w
			}
		}
		if len(refused) > 0 {
			return &ProtectedError{Why: refused}
		}
	}
	for _, id := range ids {
		if err := os.Remove(s.metaPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove transaction %d: %w", id, err)
		}
	}
	crash(CPRemoveUnpublish)
	return nil
}

// PruneCandidates returns the transactions prune --keep keep would remove:
// all but the keep newest, never the active, a mounted or a pinned one.
func (s *State) PruneCandidates(keep int) ([]uint64, error) {
	ids, err := s.IDs()
	if err != nil {
		return nil, err
	}
	prot, err := s.Protected()
	if err != nil {
		return nil, err
	}
	if keep < 0 {
		keep = 0
	}
	var out []uint64
	if len(ids) > keep {
		for _, id := range ids[:len(ids)-keep] {
			if _, ok := prot[id]; !ok {
				out = append(out, id)
			}
		}
	}
	return out, nil
}
