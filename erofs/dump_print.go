package erofs

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// WriteDump prints the tree in the composefs-dump(5) format exactly as
// composefs-info dump (1.0.8) does: one line per node in depth-first
// pre-order with children in byte order of their names; hardlinks as "@"
// lines carrying their target's fields and path; a directory's SIZE is its
// Size (for a tree read from an image: the EROFS i_size). Xattrs are printed
// in the node's (sorted) order; for an image, (*Image).WriteDump prints them
// in composefs-info's own order.
func WriteDump(w io.Writer, root *tree.Node) error {
	return writeDump(w, root, nil)
}

// WriteDump prints the image as composefs-info dump does, including the
// order of xattrs (libcomposefs lists an inode's inline xattrs before its
// shared ones).
func (img *Image) WriteDump(w io.Writer) error {
	root, order, err := img.tree(true)
	if err != nil {
		return err
	}
	return writeDump(w, root, order)
}

func writeDump(w io.Writer, root *tree.Node, order map[*tree.Node][]tree.Xattr) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	p := dumpPrinter{w: bw, order: order}
	p.node(root, "")
	if p.err != nil {
		return p.err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing dump: %w", err)
	}
	return nil
}

type dumpPrinter struct {
	w     *bufio.Writer
	order map[*tree.Node][]tree.Xattr
	buf   []byte
	err   error
}

// Escape flags of composefs-info's print_escaped.
const (
	escapeEqual    = 1 << iota // '=' as \x3d (xattr keys and values)
	escapeLoneDash             // a whole value of "-" as \x2d (payload, content)
	noEscapeSpace              // ' ' printed as is (ls output)
)

// appendEscaped appends s escaped like composefs-info's print_escaped: \\,
// \n, \r, \t by name, every other byte that is not isgraph() in the C locale
// (isprint() with noEscapeSpace) as \xHH in lowercase.
func appendEscaped(b []byte, s string, flags int) []byte {
	if flags&escapeLoneDash != 0 && s == "-" {
		return append(b, `\x2d`...)
	}
	const hexdig = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c == '=' && flags&escapeEqual != 0,
			c == ' ' && flags&noEscapeSpace == 0,
			c < ' ' || c > '~':
			b = append(b, '\\', 'x', hexdig[c>>4], hexdig[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}

func (p *dumpPrinter) node(n *tree.Node, path string) {
	if p.err != nil {
		return
	}
	t := n.Inode()
	b := p.buf[:0]
	if path == "" {
		b = append(b, '/')
	} else {
		b = appendEscaped(b, path, 0)
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, t.Size, 10)
	b = append(b, ' ')
	if n.LinkTo != nil {
		b = append(b, '@')
	}
	b = strconv.AppendUint(b, uint64(t.Mode), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.Nlink), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.UID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.GID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.Rdev), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, t.Mtime.Sec, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(t.Mtime.Nsec), 10)
	b = append(b, ' ')
	// PAYLOAD: the hardlink's target path, a symlink's target, or an
	// external file's object path.
	payload := t.Payload
	if n.LinkTo != nil {
		payload = t.Path()
	} else if t.Type() == tree.TypeLink {
		payload = t.Target
	}
	b = appendOptional(b, payload)
	b = append(b, ' ')
	b = appendOptional(b, string(t.Content))
	b = append(b, ' ')
	if t.Digest != nil {
		b = hex.AppendEncode(b, t.Digest)
	} else {
		b = append(b, '-')
	}
	xattrs := t.Xattrs
	if o, ok := p.order[t]; ok {
		xattrs = o
	}
	for _, x := range xattrs {
		b = append(b, ' ')
		b = appendEscaped(b, x.Name, escapeEqual)
		b = append(b, '=')
		b = appendEscaped(b, string(x.Value), escapeEqual)
	}
	b = append(b, '\n')
	if _, err := p.w.Write(b); err != nil {
		p.err = fmt.Errorf("writing dump: %w", err)
		return
	}
	p.buf = b
	if n.LinkTo != nil {
		return
	}
	children := n.Children
	if !slices.IsSortedFunc(children, byName) {
		children = slices.Clone(children)
		slices.SortStableFunc(children, byName)
	}
	for _, c := range children {
		p.node(c, path+"/"+c.Name)
	}
}

func byName(a, b *tree.Node) int { return strings.Compare(a.Name, b.Name) }

// appendOptional prints "-" for an empty field: libcomposefs has no empty
// payload or content (it would leave an empty, unparsable field).
func appendOptional(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s, escapeLoneDash)
}

// WriteListing prints the tree as composefs-info ls does: every path below
// the root in depth-first order, directories followed by "/\t", symlinks by
// "\t-> TARGET", external files by "\t@ PAYLOAD"; a hardlink is its bare
// path. Paths keep spaces unescaped.
func WriteListing(w io.Writer, root *tree.Node) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var b []byte
	var walk func(n *tree.Node, path string)
	walk = func(n *tree.Node, path string) {
		children := n.Children
		if !slices.IsSortedFunc(children, byName) {
			children = slices.Clone(children)
			slices.SortStableFunc(children, byName)
		}
		for _, c := range children {
			p := path + "/" + c.Name
			b = appendEscaped(b[:0], p, noEscapeSpace)
			if c.LinkTo == nil {
				switch c.Mode & tree.TypeMask {
				case tree.TypeDir:
					b = append(b, "/\t"...)
				case tree.TypeLink:
					b = append(b, "\t-> "...)
					b = appendEscaped(b, c.Target, 0)
				case tree.TypeReg:
					if c.Payload != "" {
						b = append(b, "\t@ "...)
						b = appendEscaped(b, c.Payload, 0)
					}
				}
			}
			b = append(b, '\n')
			bw.Write(b)
			if c.LinkTo == nil {
				walk(c, p)
			}
		}
	}
	walk(root, "")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing listing: %w", err)
	}
	return nil
}
