package chunked

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
)

// IndexSource is the ContentSource of a mossfs store: its sha256 index,
// ROOT/sha256/objects/xx/<62 hex>.payload-link, relative symlinks into
// cas/objects named by the content's plain sha256. Links are opened beneath
// the store's root (os.Root), so a link that leaves it is refused.
type IndexSource struct {
	root *os.Root
}

// OpenIndex opens the sha256 index of the store at dir.
func OpenIndex(dir string) (*IndexSource, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return &IndexSource{root: r}, nil
}

// Close releases the store's root.
func (s *IndexSource) Close() error { return s.root.Close() }

// IndexPath is the index link of content d, relative to the store's root.
func IndexPath(d [32]byte) string {
	h := hex.EncodeToString(d[:])
	return path.Join("sha256", "objects", h[:2], h[2:]+".payload-link")
}

// HasSHA256 reports whether the index links d to an existing regular file.
func (s *IndexSource) HasSHA256(d [32]byte) bool {
	fi, err := s.root.Stat(IndexPath(d))
	return err == nil && fi.Mode().IsRegular()
}

// OpenSHA256 opens content d through its index link.
func (s *IndexSource) OpenSHA256(d [32]byte) (io.ReadCloser, error) {
	f, err := s.root.Open(IndexPath(d))
	if err != nil {
		return nil, err
	}
	return f, nil
}
