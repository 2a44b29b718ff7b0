// Package stone reads moss .stone packages (format version 1): the prelude,
// the payload headers, and the Meta, Layout, Index and Attributes payloads,
// each checked against its XXH3-64 checksum; the Content payload is streamed
// (WalkContent) rather than loaded. Payloads of a kind or compression a
// later format may add are skipped by their stored size and Meta records of
// unknown kinds kept raw, as moss does; only a package whose Layout, Index
// or Content is in an unknown compression cannot be imported. Import splices the files of a binary
// package into a content-addressed store and builds its /usr tree.
//
// Every size and count in a stone is untrusted: payload bodies must fit in
// the file, decompressed sizes are capped, record counts are bounded by the
// bytes actually decoded, and layout targets must be clean relative paths.
// The format is described in shared/reference/stone-format.md.
package stone

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// Magic is the first four bytes of every stone.
var Magic = [4]byte{0, 'm', 'o', 's'}

// integrity is the fixed pattern that follows num_payloads in the prelude.
var integrity = [21]byte{0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5, 0, 0, 6, 0, 0, 7}

const (
	preludeSize = 32
	headerSize  = 32
	// Version is the only stone format version.
	Version = 1
	// MaxRecordsPayload caps the decompressed size of a Meta, Layout, Index
	// or Attributes payload (they are held in memory). The largest layout in
	// AerynOS is a few MB.
	MaxRecordsPayload = 64 << 20
	// MaxMetaRecords and MaxRecords cap the record count of one Meta payload
	// and of any other payload, so that parsed records (larger in memory
	// than on disk) stay within a few hundred MB.
	MaxMetaRecords = 1 << 16
	MaxRecords     = 1 << 21
	// maxWindow is the largest zstd window moss's encoder uses (window log 31).
	maxWindow = 1 << 31
)

// FileType is the kind of stone (prelude byte 27).
type FileType uint8

// File types; other values decode as themselves and print as Unknown.
const (
	FileBinary        FileType = 1 // a package
	FileDelta         FileType = 2
	FileRepository    FileType = 3 // stone.index
	FileBuildManifest FileType = 4 // manifest.<arch>.bin
)

func (t FileType) String() string {
	switch t {
	case FileBinary:
		return "Binary"
	case FileDelta:
		return "Delta"
	case FileRepository:
		return "Repository"
	case FileBuildManifest:
		return "BuildManifest"
	}
	return fmt.Sprintf("Unknown(%d)", uint8(t))
}

// Prelude is the 32-byte header of a stone.
type Prelude struct {
	NumPayloads uint16
	FileType    FileType
	Version     uint32
}

// PayloadKind is what a payload holds.
type PayloadKind uint8

// Payload kinds.
const (
	KindMeta       PayloadKind = 1
	KindContent    PayloadKind = 2
	KindLayout     PayloadKind = 3
	KindIndex      PayloadKind = 4
	KindAttributes PayloadKind = 5
)

func (k PayloadKind) String() string {
	switch k {
	case KindMeta:
		return "Meta"
	case KindContent:
		return "Content"
	case KindLayout:
		return "Layout"
	case KindIndex:
		return "Index"
	case KindAttributes:
		return "Attributes"
	}
	return fmt.Sprintf("Unknown(%d)", uint8(k))
}

// Compression of a payload body.
type Compression uint8

// Compressions.
const (
	CompressionNone Compression = 1
	CompressionZstd Compression = 2
)

func (c Compression) known() bool { return c == CompressionNone || c == CompressionZstd }

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "None"
	case CompressionZstd:
		return "Zstd"
	}
	return fmt.Sprintf("Unknown(%d)", uint8(c))
}

// PayloadHeader is the 32-byte header of one payload.
type PayloadHeader struct {
	Offset      int64  // file offset of the header; the body follows it
	StoredSize  uint64 // body bytes in the file
	PlainSize   uint64 // body bytes once decompressed
	Checksum    uint64 // XXH3-64 of the stored body
	NumRecords  uint32
	Version     uint16
	Kind        PayloadKind
	Compression Compression
}

// BodyOffset is the file offset of the payload's stored body.
func (h *PayloadHeader) BodyOffset() int64 { return h.Offset + headerSize }

func (h *PayloadHeader) known() bool { return h.Kind >= KindMeta && h.Kind <= KindAttributes }

// Package is a parsed stone: everything but the Content payload's bytes.
type Package struct {
	Name     string // the file name, for messages
	Size     int64
	Prelude  Prelude
	Payloads []PayloadHeader
	// Meta is the first Meta payload (the package's), nil if there is none;
	// Metas holds all of them (repository indexes and build manifests have one
	// per package).
	Meta       *Meta
	Metas      []*Meta
	Layout     []LayoutEntry
	Index      []IndexEntry
	Attributes []Attribute

	r          io.ReaderAt
	content    *PayloadHeader  // the Content payload, nil if none
	unreadable []PayloadHeader // Layout, Index or Content skipped for an unknown compression
}

// ID is the package id moss uses: {name}-{version}-{release}.{arch}, or ""
// without a Meta payload.
func (p *Package) ID() string {
	if p.Meta == nil {
		return ""
	}
	return p.Meta.ID()
}

// Content returns the header of the Content payload, nil if there is none.
func (p *Package) Content() *PayloadHeader { return p.content }

// FormatError is a malformed or corrupt stone.
type FormatError struct {
	Name   string // file
	Offset int64  // where the problem is, -1 if nowhere in particular
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("stone %s: %s", e.Name, e.Msg)
	}
	return fmt.Sprintf("stone %s: offset %d: %s", e.Name, e.Offset, e.Msg)
}

func (p *Package) errorf(off int64, format string, args ...any) error {
	return &FormatError{Name: p.Name, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// Open parses the stone in r (size bytes): prelude, every payload header,
// and every payload but Content, verifying their checksums. name is used in
// error messages. r must stay readable while Content is walked.
func Open(r io.ReaderAt, size int64, name string) (*Package, error) {
	p := &Package{Name: name, Size: size, r: r}
	var pre [preludeSize]byte
	if size < preludeSize {
		return nil, p.errorf(-1, "truncated: %d bytes, a stone has at least a %d-byte prelude", size, preludeSize)
	}
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("stone %s: reading the prelude: %w", name, err)
	}
	if [4]byte(pre[0:4]) != Magic {
		return nil, p.errorf(0, "not a stone: magic %x, want %x", pre[0:4], Magic[:])
	}
	if [21]byte(pre[6:27]) != integrity {
		return nil, p.errorf(6, "corrupt prelude: integrity pattern %x", pre[6:27])
	}
	p.Prelude = Prelude{
		NumPayloads: binary.BigEndian.Uint16(pre[4:]),
		FileType:    FileType(pre[27]),
		Version:     binary.BigEndian.Uint32(pre[28:]),
	}
	if p.Prelude.Version != Version {
		return nil, p.errorf(28, "unsupported format version %d (only %d is known)", p.Prelude.Version, Version)
	}
	off := int64(preludeSize)
	for i := 0; i < int(p.Prelude.NumPayloads); i++ {
		if size-off < headerSize {
			return nil, p.errorf(off, "truncated: payload %d of %d: header needs %d bytes, %d remain", i+1, p.Prelude.NumPayloads, headerSize, size-off)
		}
		var hb [headerSize]byte
		if _, err := r.ReadAt(hb[:], off); err != nil {
			return nil, fmt.Errorf("stone %s: offset %d: reading payload header: %w", name, off, err)
		}
		h := PayloadHeader{
			Offset:      off,
			StoredSize:  binary.BigEndian.Uint64(hb[0:]),
			PlainSize:   binary.BigEndian.Uint64(hb[8:]),
			Checksum:    binary.BigEndian.Uint64(hb[16:]),
			NumRecords:  binary.BigEndian.Uint32(hb[24:]),
			Version:     binary.BigEndian.Uint16(hb[28:]),
			Kind:        PayloadKind(hb[30]),
			Compression: Compression(hb[31]),
		}
		if h.StoredSize > uint64(size-off-headerSize) {
			return nil, p.errorf(off, "truncated: %s payload claims %d stored bytes, %d remain in the file", h.Kind, h.StoredSize, size-off-headerSize)
		}
		p.Payloads = append(p.Payloads, h)
		if err := p.readPayload(&p.Payloads[len(p.Payloads)-1]); err != nil {
			return nil, err
		}
		off += headerSize + int64(h.StoredSize)
	}
	if off != size {
		return nil, p.errorf(off, "%d bytes of trailing data after the last of %d payloads", size-off, p.Prelude.NumPayloads)
	}
	// The content pointer must address the slice's final backing array.
	for i := range p.Payloads {
		if p.Payloads[i].Kind == KindContent && !p.Payloads[i].Skipped() {
			p.content = &p.Payloads[i]
		}
	}
	if len(p.unreadable) > 0 {
		// The files cannot be cross-checked without them; Import and the
		// content walk refuse such a package (Unreadable).
		return p, nil
	}
	if err := p.checkIndex(); err != nil {
		return nil, err
	}
	return p, nil
}

// Skipped says whether the reader skipped the payload by its stored size,
// as moss does, because its kind or its compression is unknown: a later
// format may add both, and today's readers must still read the rest.
func (h *PayloadHeader) Skipped() bool { return !h.known() || !h.Compression.known() }

// Unreadable returns an error naming the payloads of a known kind that were
// skipped for an unknown compression (nil if there are none). Without them
// the package's files are unknown: its Meta can be read, but importing it
// would build a tree that silently lacks files.
func (p *Package) Unreadable() error {
	if len(p.unreadable) == 0 {
		return nil
	}
	h := p.unreadable[0]
	return p.errorf(h.Offset, "%s payload with unknown compression %d was skipped: the package's files cannot be read by this version", h.Kind, uint8(h.Compression))
}

func (p *Package) readPayload(h *PayloadHeader) error {
	if !h.known() {
		return nil // unknown kind: skipped, as moss does
	}
	if !h.Compression.known() {
		// Skipped too, as moss does; but a package whose layout silently
		// vanished would import as an empty tree, so Import refuses it.
		if h.Kind != KindMeta && h.Kind != KindAttributes {
			p.unreadable = append(p.unreadable, *h)
		}
		return nil
	}
	if h.Compression == CompressionNone && h.StoredSize != h.PlainSize {
		return p.errorf(h.Offset, "uncompressed %s payload: stored size %d != plain size %d", h.Kind, h.StoredSize, h.PlainSize)
	}
	switch h.Kind {
	case KindContent:
		if p.content != nil {
			return p.errorf(h.Offset, "a second Content payload")
		}
		p.content = h // provisional: re-pointed once Payloads stops growing
		return nil
	case KindLayout:
		if p.Layout != nil {
			return p.errorf(h.Offset, "a second Layout payload")
		}
	case KindIndex:
		if p.Index != nil {
			return p.errorf(h.Offset, "a second Index payload")
		}
	}
	limit := uint32(MaxRecords)
	if h.Kind == KindMeta {
		limit = MaxMetaRecords
	}
	if h.NumRecords > limit {
		return p.errorf(h.Offset, "%s payload: %d records, over the limit of %d", h.Kind, h.NumRecords, limit)
	}
	body, err := p.decodeRecords(h)
	if err != nil {
		return err
	}
	switch h.Kind {
	case KindMeta:
		m, err := p.parseMeta(h, body)
		if err != nil {
			return err
		}
		p.Metas = append(p.Metas, m)
		if p.Meta == nil {
			p.Meta = m
		}
	case KindLayout:
		p.Layout, err = p.parseLayout(h, body)
	case KindIndex:
		p.Index, err = p.parseIndex(h, body)
	case KindAttributes:
		p.Attributes, err = p.parseAttributes(h, body)
	}
	return err
}

// decodeRecords reads, verifies and decompresses a records payload.
func (p *Package) decodeRecords(h *PayloadHeader) ([]byte, error) {
	if h.PlainSize > MaxRecordsPayload {
		return nil, p.errorf(h.Offset, "%s payload of %d bytes exceeds the %d-byte limit", h.Kind, h.PlainSize, MaxRecordsPayload)
	}
	if h.StoredSize > MaxRecordsPayload {
		return nil, p.errorf(h.Offset, "%s payload stores %d bytes, over the %d-byte limit", h.Kind, h.StoredSize, MaxRecordsPayload)
	}
	// StoredSize was checked against the file size, so this is bounded by it.
	stored := make([]byte, h.StoredSize)
	if _, err := p.r.ReadAt(stored, h.BodyOffset()); err != nil {
		return nil, fmt.Errorf("stone %s: offset %d: reading %s payload: %w", p.Name, h.BodyOffset(), h.Kind, err)
	}
	if sum := xxh3.Hash(stored); sum != h.Checksum {
		return nil, p.errorf(h.Offset, "%s payload checksum mismatch: XXH3-64 of the stored body is %016x, header says %016x", h.Kind, sum, h.Checksum)
	}
	if h.Compression == CompressionNone {
		return stored, nil
	}
	dec, err := getDecoder(bytes.NewReader(stored), h.PlainSize)
	if err != nil {
		return nil, fmt.Errorf("stone %s: zstd: %w", p.Name, err)
	}
	defer putDecoder(dec, h.PlainSize)
	// Grow with the data actually decoded, never by the claimed size alone.
	buf := bytes.NewBuffer(make([]byte, 0, min(h.PlainSize, 4<<20)))
	n, err := io.Copy(buf, io.LimitReader(dec, int64(h.PlainSize)+1))
	if err != nil {
		return nil, p.errorf(h.Offset, "%s payload: zstd: %v", h.Kind, err)
	}
	if uint64(n) != h.PlainSize {
		return nil, p.errorf(h.Offset, "%s payload decompresses to %s bytes, header says %d", h.Kind, moreThan(n, h.PlainSize), h.PlainSize)
	}
	return buf.Bytes(), nil
}

// decoders are reused: a new decoder allocates its tables and buffers,
// which costs more than decoding a small payload.
var decoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderMaxMemory(maxWindow))
	if err != nil {
		return err
	}
	return d
}}

// windowFor is the largest zstd window accepted for a payload of plain
// bytes. The decoder allocates the whole window up front, so a tiny frame
// must not be allowed to claim 2 GiB. moss's encoder pledges the source
// size, so its window is at most the next power of two above it; 8 MiB is
// zstd's default window at moss's level (18) when nothing is pledged.
func windowFor(plain uint64) uint64 {
	return min(maxWindow, max(2*plain, 8<<20))
}

func getDecoder(r io.Reader, plain uint64) (*zstd.Decoder, error) {
	switch d := decoders.Get().(type) {
	case *zstd.Decoder:
		w := windowFor(plain)
		return d, d.ResetWithOptions(r, zstd.WithDecoderMaxWindow(w), zstd.WithDecoderMaxMemory(w))
	case error:
		return nil, d
	}
	panic("unreachable")
}

// putDecoder returns a decoder to the pool, unless it decoded a payload so
// large that its window buffer should rather be freed.
func putDecoder(d *zstd.Decoder, plain uint64) {
	if plain <= 64<<20 && d.Reset(nil) == nil {
		decoders.Put(d)
		return
	}
	d.Close()
}

func moreThan(n int64, limit uint64) string {
	if uint64(n) > limit {
		return fmt.Sprintf("more than %d", limit)
	}
	return fmt.Sprint(n)
}

// cstring trims the trailing NULs both writers may leave on strings.
func cstring(b []byte) string { return string(bytes.TrimRight(b, "\x00")) }

func (p *Package) checkString(h *PayloadHeader, what string, s string) error {
	if !utf8.ValidString(s) {
		return p.errorf(h.Offset, "%s is not UTF-8: %q", what, s)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return p.errorf(h.Offset, "%s has an embedded NUL: %q", what, s)
	}
	return nil
}

// Attribute is one record of an Attributes payload (unused by moss).
type Attribute struct {
	Key, Value []byte
}

func (p *Package) parseAttributes(h *PayloadHeader, b []byte) ([]Attribute, error) {
	var out []Attribute
	for i := uint32(0); i < h.NumRecords; i++ {
		if len(b) < 16 {
			return nil, p.errorf(h.Offset, "Attributes record %d: truncated", i)
		}
		kl, vl := binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
		b = b[16:]
		if kl > uint64(len(b)) || vl > uint64(len(b))-kl {
			return nil, p.errorf(h.Offset, "Attributes record %d: key %d + value %d bytes, %d remain", i, kl, vl, len(b))
		}
		out = append(out, Attribute{Key: b[:kl:kl], Value: b[kl : kl+vl : kl+vl]})
		b = b[kl+vl:]
	}
	if len(b) != 0 {
		return nil, p.errorf(h.Offset, "Attributes payload: %d bytes after %d records", len(b), h.NumRecords)
	}
	return out, nil
}
