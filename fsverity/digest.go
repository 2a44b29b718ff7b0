// Package fsverity computes fs-verity file digests in userspace and drives the
// kernel's fs-verity ioctls.
//
// The digest is the one the kernel reports from FS_IOC_MEASURE_VERITY for a
// file with verity enabled as version 1, SHA-256, 4096-byte blocks and no
// salt — the parameters composefs uses for object names, the overlay
// metacopy xattr and image digests. It equals the output of
// `fsverity digest --hash-alg=sha256 --block-size=4096 --compact FILE`:
//
//  1. The data is split into 4096-byte blocks, the last one zero-padded.
//  2. Level 0 of the Merkle tree is the SHA-256 of each data block, packed
//     into 4096-byte blocks (128 hashes each, the last block zero-padded);
//     each further level hashes the blocks of the level below, until a
//     level holds a single hash: the root hash. One data block: the root
//     is its hash. Empty data: the root is all zero.
//  3. The digest is SHA-256 of the 256-byte fs-verity descriptor (version,
//     algorithm, log2 block size, data size, root hash).
//
// [New] streams, [Sum] hashes a byte slice, and [DigestFile] /
// [DigestReaderAt] hash large files with all cores: the level-0 blocks of
// independent 512 KiB ranges are hashed in parallel and the upper levels
// built from their results.
package fsverity

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	// BlockSize is the Merkle tree block size (log2 = 12).
	BlockSize = 4096
	// Size is the size of a digest in bytes.
	Size = sha256.Size

	hashesPerBlock = BlockSize / Size
	logBlockSize   = 12
	algSHA256      = 1
)

// Hasher computes the fs-verity digest of the data written to it. The zero
// value is not usable: call [New].
type Hasher struct {
	size uint64
	// partial data block
	blk [BlockSize]byte
	n   int
	// levels[i] holds the hashes of level i not yet packed into a full block.
	levels []*level
}

type level struct {
	buf [BlockSize]byte
	n   int // bytes used in buf (multiple of Size)
}

// New returns a Hasher for an empty input.
func New() *Hasher { return &Hasher{} }

// Reset makes h hash an empty input again, keeping its buffers.
func (h *Hasher) Reset() {
	h.size, h.n = 0, 0
	for _, l := range h.levels {
		l.n = 0
	}
}

// Size64 returns the number of bytes written so far.
func (h *Hasher) Size64() uint64 { return h.size }

// Write adds p to the input. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	total := len(p)
	h.size += uint64(total)
	if h.n > 0 {
		c := copy(h.blk[h.n:], p)
		h.n += c
		p = p[c:]
		if h.n < BlockSize {
			return total, nil
		}
		h.push(0, sha256.Sum256(h.blk[:]))
		h.n = 0
	}
	for len(p) >= BlockSize {
		h.push(0, sha256.Sum256(p[:BlockSize]))
		p = p[BlockSize:]
	}
	if len(p) > 0 {
		h.n = copy(h.blk[:], p)
	}
	return total, nil
}

// push appends a hash to level i; a level whose block becomes full is hashed
// into level i+1 at once. A level left holding exactly one hash at the end is
// the root (see root), so pushing eagerly gives the same tree as the kernel.
func (h *Hasher) push(i int, sum [Size]byte) {
	for {
		if i == len(h.levels) {
			h.levels = append(h.levels, new(level))
		}
		l := h.levels[i]
		copy(l.buf[l.n:], sum[:])
		l.n += Size
		if l.n < BlockSize {
			return
		}
		sum = sha256.Sum256(l.buf[:])
		l.n = 0
		i++
	}
}

// root returns the Merkle tree root hash. It does not change h.
func (h *Hasher) root() [Size]byte {
	var root [Size]byte
	if h.size == 0 {
		return root
	}
	// Work on copies so that Sum can be called repeatedly while writing.
	var carry [Size]byte
	hasCarry := false
	if h.n > 0 {
		var blk [BlockSize]byte
		copy(blk[:], h.blk[:h.n])
		carry, hasCarry = sha256.Sum256(blk[:]), true
	}
	var buf [BlockSize]byte
	for i := 0; i < len(h.levels); i++ {
		l := h.levels[i]
		n := l.n
		copy(buf[:], l.buf[:n])
		if hasCarry {
			copy(buf[n:], carry[:])
			n += Size
			hasCarry = false
		}
		top := i == len(h.levels)-1
		if n == 0 {
			continue
		}
		if top && n == Size {
			copy(root[:], buf[:Size])
			return root
		}
		// n < BlockSize here unless the carry filled the block exactly.
		clear(buf[n:])
		carry, hasCarry = sha256.Sum256(buf[:]), true
		if top {
			return carry
		}
	}
	// Only reached when levels is empty: a single partial data block.
	return carry
}

// Sum returns the fs-verity digest of the data written so far.
func (h *Hasher) Sum() [Size]byte {
	return descriptorDigest(h.size, h.root())
}

// descriptorDigest hashes the fs-verity descriptor of a file.
func descriptorDigest(size uint64, root [Size]byte) [Size]byte {
	var d [256]byte
	d[0] = 1 // version
	d[1] = algSHA256
	d[2] = logBlockSize
	d[3] = 0 // salt size
	binary.LittleEndian.PutUint64(d[8:16], size)
	copy(d[16:16+64], root[:])
	return sha256.Sum256(d[:])
}

// Sum returns the fs-verity digest of data.
func Sum(data []byte) [Size]byte {
	var h Hasher
	h.Write(data)
	return h.Sum()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// DigestReader returns the fs-verity digest of everything read from r.
func DigestReader(r io.Reader) ([Size]byte, error) {
	h := New()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if _, err := io.CopyBuffer(writerOnly{h}, r, *bp); err != nil {
		return [Size]byte{}, err
	}
	return h.Sum(), nil
}

// writerOnly hides any ReaderFrom so CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }

// DigestFile returns the fs-verity digest of the file at path, hashing large
// files on all cores.
func DigestFile(path string) ([Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [Size]byte{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return [Size]byte{}, err
	}
	if !st.Mode().IsRegular() {
		return [Size]byte{}, fmt.Errorf("fs-verity digest of %s: not a regular file", path)
	}
	d, err := DigestReaderAt(f, st.Size())
	if err != nil {
		return d, fmt.Errorf("fs-verity digest of %s: %w", path, err)
	}
	return d, nil
}

const (
	// chunkSize is one unit of parallel work: the data covered by one full
	// level-0 block, so each unit yields one level-1 hash.
	chunkSize = BlockSize * hashesPerBlock
	// parallelMin is the size from which DigestReaderAt uses several
	// goroutines; below it the start-up costs more than it saves.
	parallelMin = 4 * chunkSize
)

// ErrShortFile is returned when a file ends before the size it was said to have.
var ErrShortFile = errors.New("file is shorter than expected (changed while hashing?)")

// DigestReaderAt returns the fs-verity digest of the first size bytes of r,
// hashing independent 512 KiB ranges on all cores (GOMAXPROCS) when size is
// large. r must not be shorter than size.
func DigestReaderAt(r io.ReaderAt, size int64) ([Size]byte, error) {
	return digestReaderAt(r, size, runtime.GOMAXPROCS(0))
}

func digestReaderAt(r io.ReaderAt, size int64, workers int) ([Size]byte, error) {
	if size < 0 {
		return [Size]byte{}, fmt.Errorf("negative size %d", size)
	}
	nchunks := (size + chunkSize - 1) / chunkSize
	if workers > int(nchunks) {
		workers = int(nchunks)
	}
	if size < parallelMin || workers <= 1 {
		// One pass, one goroutine: chunks in order through the same code.
		if size <= chunkSize {
			h := New()
			bp := bufPool.Get().(*[]byte)
			defer bufPool.Put(bp)
			n, err := readFull(r, (*bp)[:size], 0)
			if err != nil {
				return [Size]byte{}, err
			}
			h.Write((*bp)[:n])
			return h.Sum(), nil
		}
		workers = 1
	}
	level1 := make([]byte, nchunks*Size)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	work := func() {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf := *bp
		var l0 [BlockSize]byte
		for !failed.Load() {
			c := next.Add(1) - 1
			if c >= nchunks {
				return
			}
			off := c * chunkSize
			n := min(int64(chunkSize), size-off)
			if _, err := readFull(r, buf[:n], off); err != nil {
				errOnce.Do(func() { firstErr = err })
				failed.Store(true)
				return
			}
			hashChunk(&l0, buf[:n])
			s := sha256.Sum256(l0[:])
			copy(level1[c*Size:], s[:])
		}
	}
	if workers == 1 {
		work()
	} else {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(work)
		}
		wg.Wait()
	}
	if firstErr != nil {
		return [Size]byte{}, firstErr
	}
	// size > chunkSize here, so level 1 has at least two hashes.
	hs := level1
	for len(hs) > Size {
		hs = nextLevel(hs)
	}
	var root [Size]byte
	copy(root[:], hs)
	return descriptorDigest(uint64(size), root), nil
}

// hashChunk fills l0 with the level-0 block for up to 128 data blocks in data
// (the last one zero-padded), zero-padding l0 itself.
func hashChunk(l0 *[BlockSize]byte, data []byte) {
	i := 0
	for len(data) >= BlockSize {
		s := sha256.Sum256(data[:BlockSize])
		copy(l0[i:], s[:])
		i += Size
		data = data[BlockSize:]
	}
	if len(data) > 0 {
		var blk [BlockSize]byte
		copy(blk[:], data)
		s := sha256.Sum256(blk[:])
		copy(l0[i:], s[:])
		i += Size
	}
	clear(l0[i:])
}

// nextLevel hashes the (zero-padded) blocks of one tree level.
func nextLevel(hs []byte) []byte {
	out := make([]byte, 0, (len(hs)+BlockSize-1)/BlockSize*Size)
	var blk [BlockSize]byte
	for len(hs) > 0 {
		n := copy(blk[:], hs)
		clear(blk[n:])
		s := sha256.Sum256(blk[:])
		out = append(out, s[:]...)
		hs = hs[n:]
	}
	return out
}

func readFull(r io.ReaderAt, p []byte, off int64) (int, error) {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || err == io.EOF {
		err = ErrShortFile
	}
	return n, fmt.Errorf("reading at offset %d: %w", off+int64(n), err)
}
