package oci

import (
	"encoding/binary"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// This file writes, without running zstd's encoder, the frames that the
// encoder (klauspost/compress's, at zstdLevel, as frameWriter.frame runs
// it) would write as raw blocks: the chunks of contents that do not
// compress, most of a real tree's bytes by size and all of the generated
// benchmark tree's. For them the encoder's match search is most of the
// work of the layer (its 1.5 MiB of hash tables, probed at random, miss
// the caches), and it finds nothing.
//
// When it finds nothing can be known beforehand. The encoder's search
// (doubleFastEncoder.Encode and EncodeNoHist, level 3) probes a block at
// fixed offsets while it has no match: 0, then p + 1 + p>>7 while below
// the block's length - 10 (blocks of fewer than 16 bytes are not probed).
// At each probe it records the 4 bytes there, and a match needs the 4
// bytes at the probe to equal those recorded at an earlier probe of the
// frame (entries of earlier frames are out of its window). So when the 4
// bytes at every probe of a frame differ from those at every other probe,
// the encoder emits no sequence, and a block without sequences is a raw
// block (level 3 stores literals raw when they are all the block has:
// allLitEntropy is off below SpeedBetterCompression). Otherwise the frame
// goes to the encoder as before. TestRawFrames compares the bytes with the
// encoder's.

// zstdProbes are the offsets the encoder probes in a block while it finds
// no match.
var zstdProbes = func() []int32 {
	var p []int32
	for s := int32(0); s < frameBlock-10; s += 1 + s>>7 {
		p = append(p, s)
	}
	return p
}()

// rawFramer writes frames of raw blocks; a worker's own.
type rawFramer struct {
	seen []uint64 // open addressing: gen<<32 | the 4 bytes at a probe
	gen  uint64
}

// appendFrame appends to dst the frame the encoder would write for in,
// if it would write raw blocks only, and reports whether it did. A frame
// of less than a block is the one EncodeAll writes (frameWriter.frame
// runs EncodeAll there), a larger one the streaming encoder's (Write of
// in, then Close).
func (r *rawFramer) appendFrame(dst, in []byte) ([]byte, bool) {
	if len(in) == 0 || !r.distinct(in) {
		return dst, false
	}
	sum := xxhash.Sum64(in)                   // zstd's frame checksum: XXH64, seed 0
	dst = append(dst, 0x28, 0xb5, 0x2f, 0xfd) // magic
	n := len(in)
	if n < frameBlock {
		// EncodeAll's header: the content size, the window only when not
		// a single segment (1 KiB and less).
		const checksum = 1 << 2
		var fcs byte
		if n >= 256 {
			fcs++
		}
		if n >= 65536+256 {
			fcs++
		}
		if single := n > 1024; single {
			dst = append(dst, checksum|1<<5|fcs<<6)
		} else {
			w := max(1<<bits.Len(uint(n)), 1024)
			dst = append(dst, checksum|fcs<<6, byte((bits.Len32(uint32(w-1))-10)<<3))
		}
		switch fcs {
		case 0:
			// Neither single nor 256 bytes: no size.
		case 1:
			dst = binary.LittleEndian.AppendUint16(dst, uint16(n-256))
		case 2:
			dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
		}
		dst = appendRawBlock(dst, in, true)
	} else {
		// The streaming encoder's: no content size, its 8 MiB window;
		// every full block is written when filled, and Close writes the
		// rest, or an empty block when nothing is left, as the last.
		dst = append(dst, 1<<2, (23-10)<<3)
		for len(in) >= frameBlock {
			dst = appendRawBlock(dst, in[:frameBlock], false)
			in = in[frameBlock:]
		}
		dst = appendRawBlock(dst, in, true)
	}
	// The checksum: the low 4 bytes of the content's XXH64.
	return binary.LittleEndian.AppendUint32(dst, uint32(sum)), true
}

func appendRawBlock(dst, b []byte, last bool) []byte {
	h := uint32(len(b)) << 3 // type raw: 0
	if last {
		h |= 1
	}
	dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
	return append(dst, b...)
}

// distinct reports whether the 4 bytes at each of the encoder's probes of
// in differ from those at all its other probes.
func (r *rawFramer) distinct(in []byte) bool {
	probes := 0
	for b := 0; b < len(in); b += frameBlock {
		probes += len(blockProbes(min(frameBlock, len(in)-b)))
	}
	size := 64
	for size < 2*probes {
		size <<= 1
	}
	if len(r.seen) < size {
		r.seen, r.gen = make([]uint64, size), 0
	}
	r.gen++
	if r.gen == 1<<32 {
		clear(r.seen)
		r.gen = 1
	}
	// Only as much of the table as the frame needs: a frame's probes in
	// a table grown for a larger frame would miss the caches.
	seen := r.seen[:size]
	mask := uint32(size - 1)
	shift := 32 - uint(bits.Len32(mask))
	tag := r.gen << 32
	for b := 0; b < len(in); b += frameBlock {
		blk := in[b:min(b+frameBlock, len(in))]
		for _, p := range blockProbes(len(blk)) {
			v := binary.LittleEndian.Uint32(blk[p:])
			for h := (v * 0x9e3779b1) >> shift; ; h = (h + 1) & mask {
				e := seen[h]
				if e&^0xffffffff != tag {
					seen[h] = tag | uint64(v)
					break
				}
				if uint32(e) == v {
					return false
				}
			}
		}
	}
	return true
}

// blockProbes are the probes of a block of n bytes.
func blockProbes(n int) []int32 {
	if n < 16 {
		return nil
	}
	lim := int32(n - 10)
	k := len(zstdProbes)
	if n < frameBlock {
		// zstdProbes is increasing: the first at or past the limit.
		lo, hi := 0, len(zstdProbes)
		for lo < hi {
			m := (lo + hi) / 2
			if zstdProbes[m] < lim {
				lo = m + 1
			} else {
				hi = m
			}
		}
		k = lo
	}
	return zstdProbes[:k]
}
