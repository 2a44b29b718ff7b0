package adopt

import (
	"os"
	"slices"

	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/mossdb"
	"github.com/mossfs/mossfs/internal/state"
)

// BootDefault writes the BLS entries of the newest transactions and
// makes id the default, in dirs or (none given, as root) in the standard
// entries directories under / that hold mossfs entries.
func BootDefault(s *state.State, id uint64, dirs []string) ([]string, error) {
	if len(dirs) == 0 {
		if os.Geteuid() != 0 {
			return nil, nil
		}
		dirs = bls.FindEntryDirs("/")
	}
	list, err := s.List()
	if err != nil {
		return nil, err
	}
	txs := make([]bls.Transaction, len(list))
	for i, tx := range list {
		txs[i] = bls.Transaction{ID: tx.ID, Image: tx.Image}
	}
	for i, d := range dirs {
		if cfg, ok := bls.Template(d); ok {
			if _, err := bls.Sync(d, txs, cfg); err != nil {
				return dirs[:i], err
			}
		}
		if err := bls.SetDefault(d, id); err != nil {
			return dirs[:i], err
		}
	}
	return dirs, nil
}

// PruneFollowed removes the transactions adopted from mossRoot whose moss
// state is gone, except protected ones (pinned, active, mounted), which it
// returns with the reason.
func PruneFollowed(s *state.State, mossRoot string, states []mossdb.State) ([]uint64, map[uint64]string, error) {
	live := map[uint64]bool{}
	for _, st := range states {
		live[st.ID] = true
	}
	list, err := s.List()
	if err != nil {
		return nil, nil, err
	}
	prot, err := s.Protected()
	if err != nil {
		return nil, nil, err
	}
	var gone []uint64
	kept := map[uint64]string{}
	for _, tx := range list {
		if tx.Moss == nil || tx.Moss.Root != mossRoot || live[tx.Moss.State] {
			continue
		}
		if why, ok := prot[tx.ID]; ok {
			kept[tx.ID] = why
			continue
		}
		gone = append(gone, tx.ID)
	}
	slices.Sort(gone)
	if len(gone) > 0 {
		if err := s.Remove(gone, false); err != nil {
			return nil, kept, err
		}
	}
	return gone, kept, nil
}
