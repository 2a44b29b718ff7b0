package erofs

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"

	"github.com/mossfs/mossfs/tree"
)

// BuildImage returns the composefs EROFS image of the tree rooted at root,
// byte-for-byte what mkcomposefs 1.0.8 writes for the equivalent dump.
// root is the source tree (what a dump describes: user whiteouts as char
// 0:0, no whiteout stubs, unescaped overlay xattrs, Payload and Digest on
// external files); children may come in any order. BuildImage does not
// modify it.
func BuildImage(root *tree.Node, opts WriteOptions) ([]byte, error) {
	l, err := computeLayout(root, opts)
	if err != nil {
		return nil, fmt.Errorf("composefs image: %w", err)
	}
	buf := make([]byte, l.size)
	l.write(buf)
	return buf, nil
}

// WriteImage writes the image of root (see BuildImage) to w, in order,
// through a buffer of about a megabyte that is reused: the image is never
// whole in memory. For a file that is much cheaper than BuildImage and one
// write: the page cache takes the bytes without the page faults of a fresh
// image-sized buffer (mkcomposefs of a 65k-entry dump: 3,700 faults fewer).
func WriteImage(w io.Writer, root *tree.Node, opts WriteOptions) error {
	l, err := computeLayout(root, opts)
	if err != nil {
		return fmt.Errorf("composefs image: %w", err)
	}
	if err := l.stream(w); err != nil {
		return fmt.Errorf("write composefs image: %w", err)
	}
	return nil
}

// streamWindow is how much of the image stream holds at once (more when a
// single piece, a large directory's blocks, needs it); tests make it small.
var streamWindow uint64 = 1 << 20

// window is the part of the image being filled: buf[k] is the byte at
// offset base+k. Pieces are put in increasing offset order and never
// overlap, so what lies before the piece being placed is final, and what
// lies after is still zero.
type window struct {
	w    io.Writer
	buf  []byte
	base uint64
}

// span makes room for the piece [lo, hi): the final bytes before lo are
// written out if the piece does not fit, and the buffer starts at lo.
func (win *window) span(lo, hi uint64) error {
	if hi-win.base <= uint64(len(win.buf)) {
		return nil
	}
	if err := win.flush(lo); err != nil {
		return err
	}
	if hi-lo > uint64(len(win.buf)) {
		win.buf = make([]byte, hi-lo)
	}
	return nil
}

// flush writes the image out up to end (the buffer's final bytes, then
// zeros for a gap beyond it) and moves the window to start at end.
func (win *window) flush(end uint64) error {
	n := min(end-win.base, uint64(len(win.buf)))
	if _, err := win.w.Write(win.buf[:n]); err != nil {
		return err
	}
	clear(win.buf[:n])
	for gap := end - win.base - n; gap > 0; {
		k := min(gap, uint64(len(win.buf)))
		if _, err := win.w.Write(win.buf[:k]); err != nil {
			return err
		}
		gap -= k
	}
	win.base = end
	return nil
}

// stream writes the image to w through a window, piece by piece in the
// order of their offsets: header and superblock, inode records, the shared
// xattr table, the data blocks.
func (l *layout) stream(w io.Writer) error {
	win := &window{w: w, buf: make([]byte, min(l.size, max(streamWindow, InodesStart)))}
	l.writeHeader(win.buf)
	for i := range l.inodes {
		end := l.inodesEnd
		if i+1 < len(l.inodes) {
			end = l.inodes[i+1].pos
		}
		if err := win.span(l.inodes[i].pos, end); err != nil {
			return err
		}
		l.writeInode(win.buf, win.base, i)
	}
	off := l.inodesEnd
	for k, xi := range l.shared {
		x := &l.xattrs[xi]
		if err := win.span(off, off+l.entrySize(x)); err != nil {
			return err
		}
		off += l.putXattr(win.buf[off-win.base:], &l.inodes[l.owner[k]], x)
	}
	for i := range l.inodes {
		in := &l.inodes[i]
		if in.nBlocks == 0 {
			continue
		}
		lo, hi := uint64(in.blkaddr)*BlockSize, (uint64(in.blkaddr)+uint64(in.nBlocks))*BlockSize
		if err := win.span(lo, hi); err != nil {
			return err
		}
		l.writeData(win.buf[lo-win.base:hi-win.base], in)
	}
	return win.flush(l.size)
}

var wle = binary.LittleEndian

// write puts the image into buf, which is zeroed and l.size bytes long.
func (l *layout) write(buf []byte) {
	l.writeHeader(buf)

	// Shared xattr table, right after the inodes (§7.4).
	off := l.inodesEnd
	for k, xi := range l.shared {
		off += l.putXattr(buf[off:], &l.inodes[l.owner[k]], &l.xattrs[xi])
	}

	// Inodes and their data blocks (§12) fill disjoint parts of buf: large
	// images are written by several goroutines.
	workers := min(runtime.GOMAXPROCS(0), len(l.inodes)/parallelWriteInodes+1)
	if workers <= 1 {
		l.writeInodes(buf, 0, len(l.inodes))
		return
	}
	per := (len(l.inodes) + workers - 1) / workers
	inParallel(len(l.inodes), per, func(lo, hi int) { l.writeInodes(buf, lo, hi) })
}

// writeHeader puts the composefs header and the superblock into buf, the
// image's first bytes.
func (l *layout) writeHeader(buf []byte) {
	// Composefs header (§4).
	wle.PutUint32(buf[0:], ComposefsMagic)
	wle.PutUint32(buf[4:], ComposefsHeaderVersion)
	if l.hasACL {
		wle.PutUint32(buf[8:], ComposefsFlagHasACL)
	}
	wle.PutUint32(buf[12:], uint32(l.version))

	// Superblock.
	sb := buf[SuperblockOffset:]
	wle.PutUint32(sb[0:], SuperMagic)
	wle.PutUint32(sb[8:], FeatureCompatMtime|FeatureCompatXattrFilter)
	sb[12] = BlockBits
	wle.PutUint16(sb[14:], uint16(l.inodes[0].pos/SlotSize))
	wle.PutUint64(sb[16:], uint64(len(l.inodes)))
	wle.PutUint64(sb[24:], uint64(l.buildTime.Sec))
	wle.PutUint32(sb[32:], l.buildTime.Nsec)
	wle.PutUint32(sb[36:], uint32(l.size/BlockSize))
	wle.PutUint32(sb[44:], uint32(l.inodesEnd/BlockSize))
}

// parallelWriteInodes is how many inodes make it worth another goroutine.
const parallelWriteInodes = 8192

// writeInodes writes the records and data blocks of inodes [lo, hi).
func (l *layout) writeInodes(buf []byte, lo, hi int) {
	for i := lo; i < hi; i++ {
		l.writeInode(buf, 0, i)
		in := &l.inodes[i]
		if in.nBlocks == 0 {
			continue
		}
		l.writeData(buf[uint64(in.blkaddr)*BlockSize:(uint64(in.blkaddr)+uint64(in.nBlocks))*BlockSize], in)
	}
}

// writeData puts the data blocks of in into data.
func (l *layout) writeData(data []byte, in *inode) {
	switch {
	case in.typ() == tree.TypeDir:
		l.putDirents(data, in, true)
	case in.flags&inodeChunkBlock != 0:
		for j := range data {
			data[j] = 0xff
		}
	case in.flags&inodeSymlinkBlock != 0:
		copy(data, in.src.Target)
	default:
		// Inline content: its full blocks (the last one zero-padded).
		copy(data, in.src.Content)
	}
}

// writeInode puts the record of inode i (with its xattrs and inline tail)
// into buf, which holds the image from offset base on.
func (l *layout) writeInode(buf []byte, base uint64, i int) {
	in := &l.inodes[i]
	b := buf[in.pos-base:]
	size := l.iSize(in)
	icount := uint16(0)
	if in.xattrSize > 0 {
		icount = uint16((in.xattrSize-XattrHeaderSize)/4 + 1)
	}
	uid, gid, mtime := l.owner3(in)
	if in.flags&inodeCompact != 0 {
		wle.PutUint16(b[0:], in.format())
		wle.PutUint16(b[2:], icount)
		wle.PutUint16(b[4:], in.mode)
		wle.PutUint16(b[6:], uint16(in.nlink))
		wle.PutUint32(b[8:], uint32(size))
		wle.PutUint32(b[16:], in.u)
		wle.PutUint32(b[20:], uint32(i))
		wle.PutUint16(b[24:], uint16(uid))
		wle.PutUint16(b[26:], uint16(gid))
		b = b[InodeCompactSize:]
	} else {
		wle.PutUint16(b[0:], in.format())
		wle.PutUint16(b[2:], icount)
		wle.PutUint16(b[4:], in.mode)
		wle.PutUint64(b[8:], size)
		wle.PutUint32(b[16:], in.u)
		wle.PutUint32(b[20:], uint32(i))
		wle.PutUint32(b[24:], uid)
		wle.PutUint32(b[28:], gid)
		wle.PutUint64(b[32:], uint64(mtime.Sec))
		wle.PutUint32(b[40:], mtime.Nsec)
		wle.PutUint32(b[44:], in.nlink)
		b = b[InodeExtendedSize:]
	}
	if in.xattrSize > 0 {
		xs := l.xattrs[in.xattrStart : in.xattrStart+in.nXattrs]
		var filter uint32
		for j := range xs {
			filter |= 1 << l.names[xs[j].name].bit
		}
		wle.PutUint32(b[0:], ^filter)
		b[4] = in.nShared
		p := uint64(XattrHeaderSize)
		base := l.inodesEnd % BlockSize
		for j := range xs {
			if xs[j].shared >= 0 {
				wle.PutUint32(b[p:], uint32((base+uint64(xs[j].shared))/4))
				p += 4
			}
		}
		for j := range xs {
			if xs[j].shared < 0 {
				p += l.putXattr(b[p:], in, &xs[j])
			}
		}
		b = b[in.xattrSize:]
	}
	if in.tail == 0 {
		return
	}
	switch in.typ() {
	case tree.TypeDir:
		l.putDirents(b[:in.tail], in, false)
	case tree.TypeLink:
		copy(b, in.src.Target)
	case tree.TypeReg:
		if in.flags&inodeExternal != 0 {
			// The chunk table: every chunk a hole (EROFS_NULL_ADDR).
			for j := range b[:in.tail] {
				b[j] = 0xff
			}
		} else {
			copy(b, in.src.Content[uint64(in.nBlocks)*BlockSize:])
		}
	}
}

// putXattr writes one xattr entry of inode in and returns its padded size.
func (l *layout) putXattr(b []byte, in *inode, x *xattr) uint64 {
	nm := &l.names[x.name]
	b[0] = uint8(len(nm.suffix))
	b[1] = nm.index
	n := copy(b[XattrEntrySize:], nm.suffix)
	v := l.appendValue(b[XattrEntrySize+n:XattrEntrySize+n], in, x)
	wle.PutUint16(b[2:], uint16(len(v)))
	return uint64(XattrEntrySize+n+len(v)+3) &^ 3
}

// putDirents writes a directory's entries: its full blocks into data
// (blocks true), or its inline tail into data (blocks false) (§11).
func (l *layout) putDirents(data []byte, in *inode, blocks bool) {
	ds := l.dirents[in.direntStart : in.direntStart+in.nDirents]
	first, used := 0, 0
	blockNo := uint32(0)
	flush := func(end int) {
		var dst []byte
		if blockNo < in.nBlocks {
			if blocks {
				dst = data[uint64(blockNo)*BlockSize:]
			}
		} else if !blocks {
			dst = data
		}
		if dst != nil {
			nameoff := (end - first) * DirentSize
			p := nameoff
			for k := first; k < end; k++ {
				d := &ds[k]
				e := dst[(k-first)*DirentSize:]
				t := &l.inodes[d.inode]
				wle.PutUint64(e[0:], t.pos/SlotSize)
				wle.PutUint16(e[8:], uint16(p))
				e[10] = t.ftype
				p += copy(dst[p:], d.name())
			}
		}
		blockNo++
	}
	for k := range ds {
		n := DirentSize + len(ds[k].name())
		if used+n > BlockSize {
			flush(k)
			first, used = k, 0
		}
		used += n
	}
	flush(len(ds))
}
