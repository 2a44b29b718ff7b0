package fusefs

import (
	"errors"
	"io"
)

// OpenImage opens an EROFS image for serving. Placeholder until the erofs
// reader's nid-level API is committed.
func OpenImage(path string) (Source, io.Closer, int64, error) {
	return nil, nil, 0, errors.New("fuse: EROFS images are not supported yet (reader pending)")
}
