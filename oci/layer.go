package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.podman.io/storage/pkg/chunked/compressor"
	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/tree"
)

// Layer compressions an export can write.
const (
	CompressionZstdChunked = "zstd:chunked"
	CompressionZstd        = "zstd"
	CompressionGzip        = "gzip"
	CompressionNone        = "none"
)

// zstdLevel is the zstd level of every zstd and zstd:chunked layer. It is
// pinned (c/image's zstd:chunked default would be 10) so that the same
// binary always writes the same bytes, at the speed of zstd's default level.
const zstdLevel = 3

// ContentOpener opens the content of a regular file that has a payload
// (an object in the store).
type ContentOpener func(n *tree.Node) (io.ReadCloser, error)

// LayerBlob is one written layer.
type LayerBlob struct {
	DiffID    [32]byte // sha256 of the uncompressed tar
	Digest    [32]byte // sha256 of the blob
	Size      int64    // blob bytes
	MediaType string
	// Annotations of the layer descriptor (zstd:chunked's TOC position).
	Annotations map[string]string
	// Entries is the number of tar entries written; Skipped names what a
	// tar cannot carry (sockets).
	Entries int
	Skipped []string
}

// Media types of OCI layers.
const (
	mediaTypeLayerTar  = "application/vnd.oci.image.layer.v1.tar"
	mediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
)

type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// WriteLayer writes the tree below root (root itself excluded) as a
// reproducible tar layer, compressed as asked, to out. Entries come in
// sorted depth-first order with the tree's own modes, owners, mtimes and
// xattrs (PAX SCHILY.xattr), in PAX format, with no user or group names and
// no access or change times; the first name of a hardlinked inode carries
// the content and later names are hard links to it. Regular files' contents
// come from their inline Content or, for payloads, from open. If tee is
// not nil, the uncompressed tar is written to it too.
func WriteLayer(out io.Writer, root *tree.Node, compression string, open ContentOpener, tee io.Writer) (*LayerBlob, error) {
	blob := &hashingWriter{w: out, h: sha256.New()}
	lb := &LayerBlob{Annotations: map[string]string{}}
	var comp io.WriteCloser
	var err error
	switch compression {
	case CompressionZstdChunked, "":
		lvl := zstdLevel
		comp, err = compressor.ZstdCompressor(blob, lb.Annotations, &lvl)
		lb.MediaType = mediaTypeLayerZstd
	case CompressionZstd:
		comp, err = zstd.NewWriter(blob, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(zstdLevel)))
		lb.MediaType = mediaTypeLayerZstd
	case CompressionGzip:
		comp, err = gzip.NewWriterLevel(blob, gzip.DefaultCompression)
		lb.MediaType = mediaTypeLayerGzip
	case CompressionNone:
		comp = nopCloser{blob}
		lb.MediaType = mediaTypeLayerTar
	default:
		return nil, fmt.Errorf("unknown layer compression %q (zstd:chunked, zstd, gzip or none)", compression)
	}
	if err != nil {
		return nil, fmt.Errorf("layer compressor: %w", err)
	}
	var tarOut io.Writer = comp
	if tee != nil {
		tarOut = io.MultiWriter(comp, tee)
	}
	diff := &hashingWriter{w: tarOut, h: sha256.New()}
	tw := tar.NewWriter(diff)
	werr := writeTar(tw, root, open, lb)
	if werr == nil {
		werr = tw.Close()
	}
	if cerr := comp.Close(); werr == nil && cerr != nil {
		werr = fmt.Errorf("layer compressor: %w", cerr)
	}
	if werr != nil {
		return nil, werr
	}
	copy(lb.DiffID[:], diff.h.Sum(nil))
	copy(lb.Digest[:], blob.h.Sum(nil))
	lb.Size = blob.n
	if len(lb.Annotations) == 0 {
		lb.Annotations = nil
	}
	return lb, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// writeTar writes the entries below root.
func writeTar(tw *tar.Writer, root *tree.Node, open ContentOpener, lb *LayerBlob) error {
	root.Sort()
	first := map[*tree.Node]string{} // inode owner -> name written with its content
	var walk func(dir *tree.Node, prefix string) error
	walk = func(dir *tree.Node, prefix string) error {
		for _, c := range dir.Children {
			name := prefix + c.Name
			if err := writeEntry(tw, c, name, first, open, lb); err != nil {
				return err
			}
			if c.LinkTo == nil && c.IsDir() {
				if err := walk(c, name+"/"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, "")
}

func writeEntry(tw *tar.Writer, n *tree.Node, name string, first map[*tree.Node]string, open ContentOpener, lb *LayerBlob) error {
	ino := n.Inode()
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(ino.Mode & 0o7777),
		Uid:     int(ino.UID),
		Gid:     int(ino.GID),
		ModTime: time.Unix(ino.Mtime.Sec, int64(ino.Mtime.Nsec)).UTC(),
		Format:  tar.FormatPAX,
	}
	if ino.Mtime.Nsec >= 1e9 {
		return fmt.Errorf("%s: mtime nanoseconds %d out of range", n.Path(), ino.Mtime.Nsec)
	}
	typ := ino.Mode & tree.TypeMask
	if typ == tree.TypeReg {
		if prev, ok := first[ino]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, prev
			lb.Entries++
			return tw.WriteHeader(hdr)
		}
		first[ino] = name
	}
	if len(ino.Xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(ino.Xattrs))
		for _, x := range ino.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
	}
	switch typ {
	case tree.TypeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case tree.TypeLink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, ino.Target
	case tree.TypeChar, tree.TypeBlock:
		hdr.Typeflag = tar.TypeChar
		if typ == tree.TypeBlock {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(uint64(ino.Rdev)))
		hdr.Devminor = int64(unix.Minor(uint64(ino.Rdev)))
	case tree.TypeFifo:
		hdr.Typeflag = tar.TypeFifo
	case tree.TypeSock:
		lb.Skipped = append(lb.Skipped, n.Path())
		return nil
	case tree.TypeReg:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(ino.Size)
	default:
		return fmt.Errorf("%s: unknown file type %o", n.Path(), typ)
	}
	lb.Entries++
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar entry %s: %w", name, err)
	}
	if typ != tree.TypeReg || ino.Size == 0 {
		return nil
	}
	var r io.ReadCloser
	switch {
	case ino.Content != nil:
		r = io.NopCloser(bytes.NewReader(ino.Content))
	case ino.Payload != "":
		var err error
		if r, err = open(ino); err != nil {
			return fmt.Errorf("%s: %w", n.Path(), err)
		}
	default:
		return fmt.Errorf("%s: %d bytes but neither inline content nor a payload", n.Path(), ino.Size)
	}
	defer r.Close()
	m, err := io.Copy(tw, io.LimitReader(r, int64(ino.Size)))
	if err == nil && m != int64(ino.Size) {
		err = fmt.Errorf("content is %d bytes, the image says %d", m, ino.Size)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", n.Path(), err)
	}
	return nil
}

// StoreOpener returns a ContentOpener reading payloads from an object
// directory (the store's cas/objects).
func StoreOpener(objectsDir string) ContentOpener {
	root, rerr := os.OpenRoot(objectsDir)
	return func(n *tree.Node) (io.ReadCloser, error) {
		if rerr != nil {
			return nil, rerr
		}
		if strings.HasPrefix(n.Payload, "/") {
			return nil, errors.New("absolute payload path")
		}
		return root.Open(n.Payload)
	}
}
