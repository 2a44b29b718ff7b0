package dirimport

// A local copy of the fs-verity digest (composefs-format.md §13) until the
// fsverity package lands; it is then replaced by fsverity.DigestReader.

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
)

const verityBlock = 4096

// verityDigest returns the fs-verity SHA-256 digest (4096-byte blocks, no
// salt) of everything r yields.
func verityDigest(r io.Reader) ([32]byte, error) {
	var level []byte // level-0 hashes
	buf := make([]byte, verityBlock)
	var size uint64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			size += uint64(n)
			clear(buf[n:])
			h := sha256.Sum256(buf)
			level = append(level, h[:]...)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return [32]byte{}, err
		}
	}
	var root [32]byte
	if size > 0 {
		for len(level) > 32 {
			var next []byte
			for off := 0; off < len(level); off += verityBlock {
				end := min(off+verityBlock, len(level))
				copy(buf, level[off:end])
				clear(buf[end-off:])
				h := sha256.Sum256(buf)
				next = append(next, h[:]...)
			}
			level = next
		}
		copy(root[:], level)
	}
	var desc [256]byte
	desc[0] = 1  // version
	desc[1] = 1  // sha256
	desc[2] = 12 // log2 block size
	binary.LittleEndian.PutUint64(desc[8:], size)
	copy(desc[16:], root[:])
	return sha256.Sum256(desc[:]), nil
}
