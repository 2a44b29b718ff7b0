package chunked

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Layer annotations of zstd:chunked (current and the older io.containers
// variant that skopeo 1.9 / containers/image 5.23 write, without tar-split)
// and of eStargz.
const (
	AnnotationTOCChecksum      = "io.github.containers.zstd-chunked.manifest-checksum"
	AnnotationTOCPosition      = "io.github.containers.zstd-chunked.manifest-position"
	AnnotationTarSplitPosition = "io.github.containers.zstd-chunked.tarsplit-position"
	AnnotationOldTOCChecksum   = "io.containers.zstd-chunked.manifest-checksum"
	AnnotationOldTOCPosition   = "io.containers.zstd-chunked.manifest-position"
	AnnotationEstargzTOCDigest = "containerd.io/snapshot/stargz/toc.digest"
)

// Format is the kind of seekable layer.
type Format int

const (
	// NotSeekable: no TOC whose digest the manifest vouches for.
	NotSeekable Format = iota
	// ZstdChunked with a tar-split: the diff_id can be checked.
	ZstdChunked
	// ZstdChunkedOld: the io.containers variant, TOC only, no tar-split.
	ZstdChunkedOld
	// Estargz: TOC only, no tar-split.
	Estargz
)

func (f Format) String() string {
	return [...]string{"not seekable", "zstd:chunked", "zstd:chunked (old, no tar-split)", "eStargz"}[f]
}

// Position is where a compressed piece of metadata lies in the blob.
type Position struct {
	Offset, Length, Uncompressed int64
}

// Layout says where a layer's TOC (and tar-split) are, from its annotations.
type Layout struct {
	Format    Format
	TOCDigest [32]byte // sha256 of the compressed TOC (zstd) or of the TOC JSON (eStargz)
	TOC       Position // zstd:chunked only; eStargz reads it from the footer
	TarSplit  Position // zstd:chunked with tar-split; zero when the footer must say
}

const skippableHeader = 8 // zstd skippable frame magic + length

var (
	skippableMagic = []byte{0x50, 0x2a, 0x4d, 0x18}
	footerMagic    = []byte("GNUlInUx")
)

// FooterSize is the size of the zstd:chunked footer frame at the blob's end.
const FooterSize = skippableHeader + 64

// LayoutOf reads the annotations of a layer descriptor of blobSize bytes.
// A layer without TOC annotations is NotSeekable (nil error); annotations
// that are present but malformed or outside the blob are an error.
func LayoutOf(annotations map[string]string, blobSize int64) (Layout, error) {
	var l Layout
	if sum, ok := annotations[AnnotationTOCChecksum]; ok {
		pos, ok := annotations[AnnotationTOCPosition]
		if !ok {
			return l, fmt.Errorf("annotation %s without %s", AnnotationTOCChecksum, AnnotationTOCPosition)
		}
		l.Format = ZstdChunked
		return l, l.zstd(sum, pos, annotations[AnnotationTarSplitPosition], blobSize)
	}
	if sum, ok := annotations[AnnotationOldTOCChecksum]; ok {
		pos, ok := annotations[AnnotationOldTOCPosition]
		if !ok {
			return l, fmt.Errorf("annotation %s without %s", AnnotationOldTOCChecksum, AnnotationOldTOCPosition)
		}
		l.Format = ZstdChunkedOld
		return l, l.zstd(sum, pos, "", blobSize)
	}
	if sum, ok := annotations[AnnotationEstargzTOCDigest]; ok {
		d, err := ParseDigest(sum)
		if err != nil {
			return Layout{}, fmt.Errorf("annotation %s: %w", AnnotationEstargzTOCDigest, err)
		}
		if blobSize < estargzFooterSize {
			return Layout{}, fmt.Errorf("eStargz blob of %d bytes is shorter than its footer", blobSize)
		}
		return Layout{Format: Estargz, TOCDigest: d}, nil
	}
	return l, nil
}

func (l *Layout) zstd(sum, pos, tarSplit string, blobSize int64) error {
	var err error
	if l.TOCDigest, err = ParseDigest(sum); err != nil {
		return fmt.Errorf("TOC checksum annotation: %w", err)
	}
	f, err := parseInts(pos, 4)
	if err != nil {
		return fmt.Errorf("TOC position annotation %q: %w", pos, err)
	}
	if f[3] != 1 {
		return fmt.Errorf("TOC position annotation %q: manifest type %d is not 1", pos, f[3])
	}
	l.TOC = Position{f[0], f[1], f[2]}
	if err := l.TOC.check("TOC", blobSize); err != nil {
		return err
	}
	if tarSplit != "" {
		f, err := parseInts(tarSplit, 3)
		if err != nil {
			return fmt.Errorf("tar-split position annotation %q: %w", tarSplit, err)
		}
		l.TarSplit = Position{f[0], f[1], f[2]}
		if err := l.TarSplit.check("tar-split", blobSize); err != nil {
			return err
		}
	}
	return nil
}

func (p Position) check(what string, blobSize int64) error {
	if p.Offset < skippableHeader || p.Length <= 0 || p.Length > MaxMetadataSize || p.Offset > blobSize-p.Length {
		return fmt.Errorf("%s at [%d,+%d) lies outside the blob of %d bytes or exceeds the %d-byte cap", what, p.Offset, p.Length, blobSize, MaxMetadataSize)
	}
	if p.Uncompressed <= 0 || p.Uncompressed > MaxMetadataSize {
		return fmt.Errorf("%s expands to %d bytes, outside (0, %d]", what, p.Uncompressed, MaxMetadataSize)
	}
	return nil
}

func parseInts(s string, n int) ([]int64, error) {
	parts := strings.Split(s, ":")
	if len(parts) != n {
		return nil, fmt.Errorf("want %d fields, have %d", n, len(parts))
	}
	out := make([]int64, n)
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("field %d (%q) is not a non-negative integer", i+1, p)
		}
		out[i] = v
	}
	return out, nil
}

// Footer is the decoded zstd:chunked footer.
type Footer struct {
	TOC, TarSplit Position
}

// ParseFooter decodes the last FooterSize bytes of a zstd:chunked blob.
func ParseFooter(b []byte, blobSize int64) (Footer, error) {
	var f Footer
	if len(b) != FooterSize {
		return f, fmt.Errorf("footer of %d bytes, want %d", len(b), FooterSize)
	}
	if !bytes.Equal(b[:4], skippableMagic) || binary.LittleEndian.Uint32(b[4:8]) != 64 {
		return f, fmt.Errorf("footer is not a 64-byte zstd skippable frame")
	}
	b = b[8:]
	if !bytes.Equal(b[56:], footerMagic) {
		return f, fmt.Errorf("footer magic %q, want %q", b[56:], footerMagic)
	}
	u := func(i int) (int64, error) {
		v := binary.LittleEndian.Uint64(b[8*i:])
		if v > uint64(blobSize) {
			return 0, fmt.Errorf("footer field %d (%d) exceeds the blob size %d", i, v, blobSize)
		}
		return int64(v), nil
	}
	var v [7]int64
	for i := range v {
		var err error
		if v[i], err = u(i); err != nil {
			return f, err
		}
	}
	if v[3] != 1 {
		return f, fmt.Errorf("footer manifest type %d is not 1", v[3])
	}
	f.TOC = Position{v[0], v[1], v[2]}
	f.TarSplit = Position{v[4], v[5], v[6]}
	if err := f.TOC.check("TOC", blobSize-FooterSize); err != nil {
		return f, fmt.Errorf("footer: %w", err)
	}
	if f.TarSplit != (Position{}) {
		if err := f.TarSplit.check("tar-split", blobSize-FooterSize); err != nil {
			return f, fmt.Errorf("footer: %w", err)
		}
	}
	return f, nil
}
