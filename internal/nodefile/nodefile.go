// Package nodefile stores a tree (package tree) in a fixed-layout binary
// form that loads without parsing: one record per node, children of a
// directory next to each other, names and bytes in two heaps. Loading
// allocates a few slabs (nodes, child pointers, xattrs, one string heap),
// not one object per field, so a 65k-entry tree loads in milliseconds where
// its composefs dump takes a parse of every line.
//
// The state keeps one beside each input's fragment (the fragment stays the
// record; this is its loadable form). A file names the SHA-256 of the
// fragment it was made from and carries a CRC-32C of its body: Decode
// refuses a file made from another fragment, a damaged one and one whose
// records do not form a tree, and the caller falls back to the fragment.
package nodefile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"unsafe"

	"github.com/mossfs/mossfs/internal/populate"
	"github.com/mossfs/mossfs/tree"
)

// Layout (little-endian):
//
//	header   magic "MOSSNODE", version u32, flags u32 (0), key [32]byte,
//	         nodes u32, xattrs u32, strings u32, bytes u32, crc32c u32,
//	         pad to headerSize
//	nodes    nodes × nodeSize, breadth-first from the root
//	xattrs   xattrs × xattrSize
//	strings  names, symlink targets, payloads, xattr names
//	bytes    inline contents, digests, xattr values
//
// The CRC covers everything after the header.
const (
	magic      = "MOSSNODE"
	version    = 1
	headerSize = 72
	nodeSize   = 108
	xattrSize  = 16
	none       = math.MaxUint32
)

// Node record flags: which optional fields are non-nil.
const (
	hasContent = 1 << iota
	hasDigest
	hasXattrs
	hasChildren
)

// crcTable returns the Castagnoli table. crc32 builds it on the first
// call (0.19 ms, in GODEBUG=inittrace when it was a variable set at
// start): mossfs links this package and most of its commands read no
// node file.
func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// ErrMismatch is returned by Decode for a file made from another key.
var ErrMismatch = errors.New("made from another fragment")

// Encode returns the binary form of the tree below root, bound to key (the
// fragment's SHA-256). Children must be sorted by name (tree.Node.Sort), and
// a hardlink's LinkTo must be in the same tree.
func Encode(root *tree.Node, key [32]byte) ([]byte, error) {
	// Breadth-first order: the children of each directory are contiguous.
	nodes := []*tree.Node{root}
	links := false
	var nx, ns, nb uint64
	for i := 0; i < len(nodes); i++ {
		n := nodes[i]
		nodes = append(nodes, n.Children...)
		links = links || n.LinkTo != nil
		nx += uint64(len(n.Xattrs))
		ns += uint64(len(n.Name) + len(n.Target) + len(n.Payload))
		nb += uint64(len(n.Content) + len(n.Digest))
		for _, x := range n.Xattrs {
			ns += uint64(len(x.Name))
			nb += uint64(len(x.Value))
		}
	}
	if uint64(len(nodes)) >= none || nx >= none || ns >= none || nb >= none {
		return nil, errors.New("nodefile: tree too large")
	}
	var index map[*tree.Node]uint32
	if links {
		index = make(map[*tree.Node]uint32, len(nodes))
		for i, n := range nodes {
			index[n] = uint32(i)
		}
	}
	nn := uint64(len(nodes))
	out := make([]byte, headerSize+nn*nodeSize+nx*xattrSize+ns+nb)
	le := binary.LittleEndian
	w := writer{
		strs:  out[headerSize+nn*nodeSize+nx*xattrSize:][:ns],
		bytes: out[headerSize+nn*nodeSize+nx*xattrSize+ns:],
	}
	xrecs := out[headerSize+nn*nodeSize:]
	next, xi := uint32(1), uint32(0)
	parents := make([]uint32, len(nodes))
	parents[0] = none
	for i, n := range nodes {
		r := out[headerSize+uint64(i)*nodeSize:][:nodeSize]
		first := uint32(0)
		if len(n.Children) > 0 {
			first = next
			for j := range n.Children {
				parents[next+uint32(j)] = uint32(i)
			}
			next += uint32(len(n.Children))
		}
		link := uint32(none)
		if n.LinkTo != nil {
			l, ok := index[n.LinkTo]
			if !ok {
				return nil, fmt.Errorf("nodefile: %s: hardlink to %s outside the tree", n.Path(), n.LinkTo.Path())
			}
			link = l
		}
		var flags uint32
		if n.Content != nil {
			flags |= hasContent
		}
		if n.Digest != nil {
			flags |= hasDigest
		}
		if n.Xattrs != nil {
			flags |= hasXattrs
		}
		if n.Children != nil {
			flags |= hasChildren
		}
		le.PutUint32(r, parents[i])
		le.PutUint32(r[4:], first)
		le.PutUint32(r[8:], uint32(len(n.Children)))
		le.PutUint32(r[12:], link)
		le.PutUint32(r[16:], n.Mode)
		le.PutUint32(r[20:], n.UID)
		le.PutUint32(r[24:], n.GID)
		le.PutUint32(r[28:], n.Nlink)
		le.PutUint32(r[32:], n.Rdev)
		le.PutUint32(r[36:], flags)
		le.PutUint64(r[40:], uint64(n.Mtime.Sec))
		le.PutUint32(r[48:], n.Mtime.Nsec)
		le.PutUint64(r[52:], n.Size)
		w.str(r[60:], n.Name)
		w.str(r[68:], n.Target)
		w.str(r[76:], n.Payload)
		w.byt(r[84:], n.Content)
		w.byt(r[92:], n.Digest)
		le.PutUint32(r[100:], xi)
		le.PutUint32(r[104:], uint32(len(n.Xattrs)))
		for _, x := range n.Xattrs {
			xr := xrecs[xi*xattrSize:]
			w.str(xr, x.Name)
			w.byt(xr[8:], x.Value)
			xi++
		}
	}
	copy(out, magic)
	le.PutUint32(out[8:], version)
	copy(out[16:48], key[:])
	le.PutUint32(out[48:], uint32(nn))
	le.PutUint32(out[52:], uint32(nx))
	le.PutUint32(out[56:], uint32(ns))
	le.PutUint32(out[60:], uint32(nb))
	le.PutUint32(out[64:], crc32.Checksum(out[headerSize:], crcTable()))
	return out, nil
}

// writer fills the heaps of a node file being encoded.
type writer struct {
	strs, bytes []byte
	ns, nb      uint32
}

func (w *writer) str(r []byte, s string) {
	binary.LittleEndian.PutUint32(r, w.ns)
	binary.LittleEndian.PutUint32(r[4:], uint32(len(s)))
	w.ns += uint32(copy(w.strs[w.ns:], s))
}

func (w *writer) byt(r []byte, b []byte) {
	binary.LittleEndian.PutUint32(r, w.nb)
	binary.LittleEndian.PutUint32(r[4:], uint32(len(b)))
	w.nb += uint32(copy(w.bytes[w.nb:], b))
}

// Decode loads a tree from its binary form, which must have been made with
// key. The tree's byte slices (inline contents, digests, xattr values)
// share data's memory: data must not be changed afterwards.
func Decode(data []byte, key [32]byte) (*tree.Node, error) {
	le := binary.LittleEndian
	if len(data) < headerSize || string(data[:8]) != magic {
		return nil, errors.New("not a node file")
	}
	if v := le.Uint32(data[8:]); v != version {
		return nil, fmt.Errorf("node file version %d, want %d", v, version)
	}
	if [32]byte(data[16:48]) != key {
		return nil, ErrMismatch
	}
	nn, nx := uint64(le.Uint32(data[48:])), uint64(le.Uint32(data[52:]))
	ns, nb := uint64(le.Uint32(data[56:])), uint64(le.Uint32(data[60:]))
	if nn == 0 || uint64(len(data)) != headerSize+nn*nodeSize+nx*xattrSize+ns+nb {
		return nil, errors.New("node file: size does not match its header")
	}
	body := data[headerSize:]
	if crc32.Checksum(body, crcTable()) != le.Uint32(data[64:]) {
		return nil, errors.New("node file: checksum mismatch")
	}
	xoff := nn * nodeSize
	soff := xoff + nx*xattrSize
	h := heaps{
		// The strings are views of data, which is never written again
		// (as the dump parser's are of the dump).
		strs:  unsafe.String(unsafe.SliceData(body[soff:]), int(ns)),
		bytes: body[soff+ns:],
	}

	xattrs := make([]tree.Xattr, nx)
	for i := range xattrs {
		r := body[xoff+uint64(i)*xattrSize:]
		var ok1, ok2 bool
		xattrs[i].Name, ok1 = h.str(r)
		xattrs[i].Value, ok2 = h.byt(r[8:], true)
		if !ok1 || !ok2 || xattrs[i].Name == "" {
			return nil, fmt.Errorf("node file: xattr %d: bad record", i)
		}
	}
	nodes := make([]tree.Node, nn)
	kids := make([]*tree.Node, nn-1)
	// Written whole next: map their pages in at once (a fault per page
	// was most of the decoding's time).
	populate.Slice(nodes)
	populate.Slice(kids)
	for i := range kids {
		kids[i] = &nodes[i+1]
	}
	// parents[i] is the parent that lists node i among its children.
	parents := make([]uint32, nn)
	parents[0] = none
	next := uint64(1) // the first node no directory has listed yet
	var links []int
	for i := range nodes {
		if err := h.node(body[uint64(i)*nodeSize:], nodes, i, parents, xattrs, kids, &next); err != nil {
			return nil, fmt.Errorf("node file: node %d: %w", i, err)
		}
		if nodes[i].LinkTo != nil {
			links = append(links, i)
		}
	}
	if next != nn {
		return nil, errors.New("node file: nodes in no directory")
	}
	for _, i := range links {
		if to := nodes[i].LinkTo; to.LinkTo != nil || to.Mode&tree.TypeMask == tree.TypeDir {
			return nil, fmt.Errorf("node file: node %d: hardlink to a hardlink or a directory", i)
		}
	}
	return &nodes[0], nil
}

// heaps are the two heaps of a node file.
type heaps struct {
	strs  string
	bytes []byte
}

// str returns the string that the reference r (offset, length) names.
func (h *heaps) str(r []byte) (string, bool) {
	off, n := uint64(binary.LittleEndian.Uint32(r)), uint64(binary.LittleEndian.Uint32(r[4:]))
	if off+n > uint64(len(h.strs)) {
		return "", false
	}
	return h.strs[off : off+n], true
}

// byt returns the bytes that r names, nil for an absent field (which must
// then be empty).
func (h *heaps) byt(r []byte, present bool) ([]byte, bool) {
	off, n := uint64(binary.LittleEndian.Uint32(r)), uint64(binary.LittleEndian.Uint32(r[4:]))
	if off+n > uint64(len(h.bytes)) {
		return nil, false
	}
	if !present {
		return nil, n == 0
	}
	return h.bytes[off : off+n : off+n], true
}

// node decodes record r into nodes[i] and checks it against what its
// parent and the nodes before it said.
func (h *heaps) node(r []byte, nodes []tree.Node, i int, parents []uint32, xattrs []tree.Xattr, kids []*tree.Node, next *uint64) error {
	le := binary.LittleEndian
	r = r[:nodeSize]
	n := &nodes[i]
	if i > 0 && uint64(i) >= *next {
		return errors.New("in no directory")
	}
	if le.Uint32(r) != parents[i] {
		return errors.New("its parent does not list it")
	}
	first, count, link := uint64(le.Uint32(r[4:])), uint64(le.Uint32(r[8:])), le.Uint32(r[12:])
	n.Mode, n.UID, n.GID, n.Nlink, n.Rdev = le.Uint32(r[16:]), le.Uint32(r[20:]), le.Uint32(r[24:]), le.Uint32(r[28:]), le.Uint32(r[32:])
	flags := le.Uint32(r[36:])
	n.Mtime = tree.Timespec{Sec: int64(le.Uint64(r[40:])), Nsec: le.Uint32(r[48:])}
	n.Size = le.Uint64(r[52:])
	var ok0, ok1, ok2, ok3, ok4 bool
	n.Name, ok0 = h.str(r[60:])
	n.Target, ok1 = h.str(r[68:])
	n.Payload, ok2 = h.str(r[76:])
	n.Content, ok3 = h.byt(r[84:], flags&hasContent != 0)
	n.Digest, ok4 = h.byt(r[92:], flags&hasDigest != 0)
	if !(ok0 && ok1 && ok2 && ok3 && ok4) {
		return errors.New("field outside the heaps")
	}
	if i == 0 {
		if n.Name != "" {
			return errors.New("the root has a name")
		}
	} else {
		if !validName(n.Name) {
			return fmt.Errorf("bad name %q", n.Name)
		}
		p := parents[i]
		n.Parent = &nodes[p]
		// Siblings are contiguous: the one before, if any, sorts first.
		if parents[i-1] == p && nodes[i-1].Name >= n.Name {
			return errors.New("names not sorted")
		}
	}
	if flags&^(hasContent|hasDigest|hasXattrs|hasChildren) != 0 {
		return errors.New("unknown flags")
	}
	xfirst, xcount := uint64(le.Uint32(r[100:])), uint64(le.Uint32(r[104:]))
	switch {
	case xfirst+xcount > uint64(len(xattrs)):
		return errors.New("xattrs outside the table")
	case flags&hasXattrs != 0:
		n.Xattrs = xattrs[xfirst : xfirst+xcount : xfirst+xcount]
		for j := 1; j < len(n.Xattrs); j++ {
			if n.Xattrs[j-1].Name >= n.Xattrs[j].Name {
				return errors.New("xattrs not sorted")
			}
		}
	case xcount != 0:
		return errors.New("xattrs without the flag")
	}
	if link != none {
		if uint64(link) >= uint64(len(nodes)) || link == uint32(i) || count != 0 {
			return errors.New("bad hardlink")
		}
		n.LinkTo = &nodes[link]
	}
	switch {
	case count > 0:
		if first != *next || first+count > uint64(len(nodes)) || n.Mode&tree.TypeMask != tree.TypeDir {
			return errors.New("bad children")
		}
		for c := first; c < first+count; c++ {
			parents[c] = uint32(i)
		}
		*next += count
		n.Children = kids[first-1 : first-1+count : first-1+count]
	case flags&hasChildren != 0:
		n.Children = []*tree.Node{}
	}
	return nil
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\x00")
}
