package erofs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// source reads an image through a small cache of 4 KiB blocks: inodes,
// xattrs and dirents are tiny and clustered, so one ReadAt per block instead
// of one per record keeps Tree and lookups cheap on files.
type source struct {
	r    io.ReaderAt
	size int64
	data []byte // the whole image, when opened with OpenBytes: no cache

	mu     sync.Mutex
	blocks map[int64][]byte
}

// maxCachedBlocks bounds the cache (16 MiB).
const maxCachedBlocks = 4096

func newSource(r io.ReaderAt, size int64) *source {
	return &source{r: r, size: size, blocks: make(map[int64][]byte)}
}

// read returns n bytes at off. The slice may alias the cache: callers must
// not modify it. The range must lie inside the image (callers check; read
// re-checks so that a missed check is an error, not a panic).
func (s *source) read(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > s.size || int64(n) > s.size-off {
		return nil, fmt.Errorf("%w: read of %d bytes at %d beyond the image end (%d bytes)", ErrCorrupt, n, off, s.size)
	}
	if n == 0 {
		return nil, nil
	}
	if s.data != nil {
		return s.data[off : off+int64(n) : off+int64(n)], nil
	}
	first, last := off/BlockSize, (off+int64(n)-1)/BlockSize
	if first == last {
		b, err := s.block(first)
		if err != nil {
			return nil, err
		}
		o := off - first*BlockSize
		return b[o : o+int64(n)], nil
	}
	out := make([]byte, 0, n)
	for i := first; i <= last; i++ {
		b, err := s.block(i)
		if err != nil {
			return nil, err
		}
		lo, hi := int64(0), int64(len(b))
		if i == first {
			lo = off - first*BlockSize
		}
		if i == last {
			hi = off + int64(n) - last*BlockSize
		}
		out = append(out, b[lo:hi]...)
	}
	return out, nil
}

func (s *source) block(i int64) ([]byte, error) {
	s.mu.Lock()
	b, ok := s.blocks[i]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	n := min(BlockSize, s.size-i*BlockSize)
	b = make([]byte, n)
	if m, err := s.r.ReadAt(b, i*BlockSize); m < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: image shorter than %d bytes", ErrCorrupt, s.size)
		}
		return nil, fmt.Errorf("reading image block %d: %w", i, err)
	}
	s.mu.Lock()
	if len(s.blocks) >= maxCachedBlocks {
		// Map iteration order is random: drop about half, at random.
		for k := range s.blocks {
			delete(s.blocks, k)
			if len(s.blocks) < maxCachedBlocks/2 {
				break
			}
		}
	}
	s.blocks[i] = b
	s.mu.Unlock()
	return b, nil
}

func osOpen(path string) (*os.File, error) { return os.Open(path) }
