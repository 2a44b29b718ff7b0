package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"github.com/vbatts/tar-split/tar/storage"
	"go.podman.io/storage/pkg/chunked/compressor"

	"github.com/mossfs/mossfs/oci/chunked"
)

// This file writes zstd:chunked layers in parallel: every file (and every
// chunk of a file) is its own zstd frame, so frames of different files are
// compressed by different workers and written in order. The frames are cut
// where containers/storage's compressor.ZstdCompressor cuts them for the
// same tar stream: a frame for the headers before each file's content, one
// per chunk, and the empty frames its loop leaves where two cuts meet. The
// two Chunking modes differ in where chunks end and in the encoders:
//
//   - ChunkRolling is c/s's writer byte for byte (the test compares them):
//     chunks cut by c/s's rolling checksum and at runs of zeros, every
//     frame, the TOC and the tar-split at zstdLevel.
//   - ChunkFiles cuts contents only around runs of zeros, and compresses
//     the headers' frames, the TOC and the tar-split at zstd's fastest
//     settings (contents as ChunkRolling does).
//
// Either way the encoders' settings are pinned, and their output does not
// depend on how the input is split into writes or on their concurrency.

// Chunking is how a zstd:chunked layer cuts file contents into chunks (a
// chunk is what a partial pull fetches, or finds locally, as a whole).
type Chunking string

const (
	// ChunkFiles, the default: a chunk per file content, cut only around
	// runs of zeros (holes). A partial pull reuses whole files (the store
	// and containers/storage's ostree_repos find contents by their sha256).
	// Against ChunkRolling, the export of the 65k-entry benchmark tree
	// needs some 20% less CPU (no rolling checksum over every byte, no
	// sha256 of every chunk, cheaper frames for the tar headers, the TOC
	// and the tar-split), and its blob is 0.2% larger.
	ChunkFiles Chunking = "files"
	// ChunkRolling is what containers/storage's own compressor writes, byte
	// for byte: contents are also cut where a rolling checksum says (a
	// chunk every 64 KiB on average), so that containers/storage can take
	// the unchanged chunks of a changed file from layers it already has.
	ChunkRolling Chunking = "rolling"
)

// ParseChunking reads a Chunking's name ("" is ChunkFiles).
func ParseChunking(s string) (Chunking, error) {
	switch c := Chunking(s); c {
	case "":
		return ChunkFiles, nil
	case ChunkFiles, ChunkRolling:
		return c, nil
	}
	return "", fmt.Errorf("unknown zstd:chunked chunking %q (files or rolling)", s)
}

// Constants of the format as containers/storage writes it.
const (
	chunkedRollsumBits    = compressor.RollsumBits // a chunk ends where this many low bits of the rolling sum are set
	chunkedHolesThreshold = 1 << 10                // a run of zeros this long is a chunk of its own ("zeros")
	chunkedManifestType   = 1
)

var (
	zstdSkippableMagic = []byte{0x50, 0x2a, 0x4d, 0x18}
	chunkedFooterMagic = []byte("GNUlInUx")
)

// tocEntry is a TOC entry; its fields are in containers/storage's order
// (minimal.FileMetadata), so the JSON is the same. Access and change times
// never appear: the exported tar carries none.
type tocEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	Size        int64             `json:"size,omitempty"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	ModTime     *time.Time        `json:"modtime,omitempty"`
	Devmajor    int64             `json:"devMajor,omitempty"`
	Devminor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string]string `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
	ChunkType   string            `json:"chunkType,omitempty"`
}

// pieces is a buffer of pieces of at least 1 MiB that are never copied to
// grow (a layer's TOC entries, then their JSON, grown by doubling, were
// tens of MB of copies and fresh pages).
type pieces struct {
	p [][]byte
	n int
}

const pieceMin = 1 << 20

func (b *pieces) Write(p []byte) (int, error) {
	if k := len(b.p); k == 0 || len(b.p[k-1])+len(p) > cap(b.p[k-1]) {
		b.p = append(b.p, make([]byte, 0, max(pieceMin, len(p))))
	}
	last := &b.p[len(b.p)-1]
	*last = append(*last, p...)
	b.n += len(p)
	return len(p), nil
}

func (b *pieces) Len() int { return b.n }

func (b *pieces) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, p := range b.p {
		k, err := w.Write(p)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// tocWriter writes the TOC's JSON as containers/storage's json.Marshal of
// the whole TOC (minimal.TOC) does, an entry at a time, into its
// compressor while the layer is written (the compressor's bytes do not
// depend on how its input is split into writes).
type tocWriter struct {
	out     io.Writer
	n       int // JSON bytes written
	entries int
	scratch []byte
}

func newTOCWriter(out io.Writer) *tocWriter { return &tocWriter{out: out} }

func (t *tocWriter) write(p []byte) error {
	n, err := t.out.Write(p)
	t.n += n
	return err
}

func (t *tocWriter) add(e *tocEntry) error {
	b := t.scratch[:0]
	if t.entries == 0 {
		b = append(b, `{"version":1,"entries":[`...)
	} else {
		b = append(b, ',')
	}
	b, err := appendTOCEntry(b, e)
	if err != nil {
		return err
	}
	t.scratch = b
	t.entries++
	return t.write(b)
}

// appendTOCEntry appends e's JSON as encoding/json writes it (the writer
// writes one per entry of the layer, and encoding/json's reflection was
// most of the ordered writer's TOC work): fields in order, the empty ones
// left out, strings escaped as json.Marshal escapes them (plain ones
// copied, any other through json.Marshal), the time and the xattrs through
// json.Marshal.
func appendTOCEntry(b []byte, e *tocEntry) ([]byte, error) {
	var err error
	str := func(key, v string, always bool) {
		if err != nil || (v == "" && !always) {
			return
		}
		b = append(b, key...)
		b, err = appendJSONString(b, v)
	}
	num := func(key string, v int64) {
		if v != 0 {
			b = append(b, key...)
			b = strconv.AppendInt(b, v, 10)
		}
	}
	b = append(b, '{')
	str(`"type":`, e.Type, true)
	str(`,"name":`, e.Name, true)
	str(`,"linkName":`, e.Linkname, false)
	num(`,"mode":`, e.Mode)
	num(`,"size":`, e.Size)
	num(`,"uid":`, int64(e.UID))
	num(`,"gid":`, int64(e.GID))
	if e.ModTime != nil && err == nil {
		var mt []byte
		if mt, err = e.ModTime.MarshalJSON(); err == nil {
			b = append(append(b, `,"modtime":`...), mt...)
		}
	}
	num(`,"devMajor":`, e.Devmajor)
	num(`,"devMinor":`, e.Devminor)
	if len(e.Xattrs) > 0 && err == nil {
		var x []byte
		if x, err = json.Marshal(e.Xattrs); err == nil {
			b = append(append(b, `,"xattrs":`...), x...)
		}
	}
	str(`,"digest":`, e.Digest, false)
	num(`,"offset":`, e.Offset)
	num(`,"endOffset":`, e.EndOffset)
	num(`,"chunkSize":`, e.ChunkSize)
	num(`,"chunkOffset":`, e.ChunkOffset)
	str(`,"chunkDigest":`, e.ChunkDigest, false)
	str(`,"chunkType":`, e.ChunkType, false)
	return append(b, '}'), err
}

// appendJSONString appends s quoted as json.Marshal quotes it.
func appendJSONString(b []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			return append(b, q...), err
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), nil
}

// end closes the JSON.
func (t *tocWriter) end(tarSplitDigest string) error {
	head := []byte{']'}
	if t.entries == 0 { // a nil slice
		head = []byte(`{"version":1,"entries":null`)
	}
	tail, _ := json.Marshal(tarSplitDigest)
	for _, p := range [][]byte{head, []byte(`,"tarSplitDigest":`), tail, []byte{'}'}} {
		if err := t.write(p); err != nil {
			return err
		}
	}
	return nil
}

var tocTypes = map[byte]string{
	tar.TypeReg:     chunked.TypeReg,
	tar.TypeLink:    chunked.TypeHardlink,
	tar.TypeChar:    chunked.TypeChar,
	tar.TypeBlock:   chunked.TypeBlock,
	tar.TypeDir:     chunked.TypeDir,
	tar.TypeFifo:    chunked.TypeFifo,
	tar.TypeSymlink: chunked.TypeSymlink,
}

func tocEntryOf(h *tar.Header) (tocEntry, error) {
	typ, ok := tocTypes[h.Typeflag]
	if !ok {
		return tocEntry{}, fmt.Errorf("%s: tar type %q has no TOC type", h.Name, h.Typeflag)
	}
	e := tocEntry{Type: typ, Name: h.Name, Linkname: h.Linkname, Mode: h.Mode, Size: h.Size, UID: h.Uid, GID: h.Gid,
		Devmajor: h.Devmajor, Devminor: h.Devminor}
	if !h.ModTime.IsZero() {
		t := h.ModTime
		e.ModTime = &t
	}
	for k, v := range h.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x] = base64.StdEncoding.EncodeToString([]byte(v))
		}
	}
	return e, nil
}

func newFrameEncoder(opts ...zstd.EOption) *zstd.Encoder {
	// Concurrency 1: a worker's encoder runs no goroutines of its own (the
	// bytes are those of any concurrency).
	opts = append([]zstd.EOption{zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(zstdLevel)), zstd.WithEncoderConcurrency(1)}, opts...)
	e, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		panic(err) // only for invalid options
	}
	return e
}

// fastHeaderOptions are ChunkFiles' settings for the frames of tar headers:
// zstd's fastest level, literals stored without entropy coding. A header
// frame is some 1.5-2 KiB (a PAX header and the USTAR one, mostly zeros);
// at zstdLevel, setting up the entropy tables and probing the match tables
// (which the contents between two headers push out of the caches) cost
// 10-15 µs a frame, some 0.8 CPU-seconds of the 65k-entry export; here
// about a third of that, for frames of ~210 bytes instead of ~165.
var fastHeaderOptions = []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithNoEntropyCompression(true)}

// countWriter counts what goes to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// fileChunk is one chunk of a file's content; Offset is the blob offset of
// its frame, relative to the job's first frame until the writer rebases it.
type fileChunk struct {
	ChunkOffset, Offset, Size int64
	Digest                    string
	Zeros                     bool
}

// frameWriter cuts one job (the headers before a file's content, then the
// content) into zstd frames the way containers/storage's writer does.
type frameWriter struct {
	enc     *zstd.Encoder // contents' frames
	hdr     *zstd.Encoder // the headers' frame (enc with ChunkRolling)
	cur     *zstd.Encoder // the streaming frame open (begin, write, end)
	rolling bool          // ChunkRolling: cut chunks where the rolling sum says
	raw     rawFramer
	out     countWriter
	rs      rollSum

	// For the content being written:
	started      bool      // some content consumed (the header frame is closed)
	start        int64     // offset of the first content frame
	frameStart   int64     // offset of the current frame
	consumed     int64     // content bytes consumed
	lastChunkEnd int64     // content offset where the current chunk starts
	zeros        int64     // zeros seen but not yet classified (run in progress)
	chunkHash    hash.Hash // the chunk's, fed in pieces (a whole content's chunks are hashed at the end)
	whole        hash.Hash // content digest when fed in pieces (nil: computed at the end)
	chunks       []fileChunk
	// known is the content's digest as the store records it ("": to be
	// computed): then neither whole nor, for a content of one chunk, the
	// chunk is hashed.
	known string
	// pre and src are the headers and the whole content of a job begun
	// with beginWhole (src nil otherwise).
	pre, src []byte
}

func newFrameWriter(c Chunking) *frameWriter {
	f := &frameWriter{enc: newFrameEncoder(), chunkHash: sha256.New(), rolling: c == ChunkRolling}
	f.hdr = f.enc
	if !f.rolling {
		f.hdr = newFrameEncoder(fastHeaderOptions...)
	}
	return f
}

// begin starts a job writing to dst: pre (tar headers and padding) opens the
// first frame.
func (f *frameWriter) begin(dst io.Writer, pre []byte) error {
	f.reset(dst)
	f.cur = f.hdr
	f.cur.Reset(&f.out)
	_, err := f.cur.Write(pre)
	return err
}

// beginWhole starts a job whose content is src, whole, writing to dst:
// each frame (pre alone, then each chunk of src) is compressed, and each
// chunk hashed, from where it lies once it ends, rather than copied into
// the encoder as it is fed. known is the content's digest if the store
// records it ("" otherwise).
func (f *frameWriter) beginWhole(dst *frameBuf, pre, src []byte, known string) {
	f.reset(dst)
	f.whole, f.pre, f.src, f.known = nil, pre, src, known
}

func (f *frameWriter) reset(dst io.Writer) {
	f.out = countWriter{w: dst}
	f.started, f.start, f.frameStart, f.consumed, f.lastChunkEnd, f.zeros = false, 0, 0, 0, 0, 0
	f.rs = newRollSum()
	f.chunkHash.Reset()
	f.chunks = f.chunks[:0]
	f.whole = nil
	f.known = ""
	f.pre, f.src = nil, nil
}

// closeFrame ends the current frame and opens the next.
func (f *frameWriter) closeFrame() error {
	if f.src != nil {
		in := f.pre
		if f.started {
			in = f.src[f.lastChunkEnd:f.consumed]
		}
		return f.frame(in)
	}
	if err := f.cur.Close(); err != nil {
		return err
	}
	f.cur = f.enc
	f.cur.Reset(&f.out)
	return nil
}

// frame writes in as one frame. Below a block (128 KiB), the streaming
// encoder compresses a frame, at Close, with the very function EncodeAll
// runs (encodeAll, from a reset state): EncodeAll appends the same bytes
// to the job's buffer without the copies in and out of the encoder's own.
// Not so for an empty frame, which the two spell differently (a content
// size or a checksum): that one is streamed. A frame the encoder would
// write as raw blocks (contents that do not compress) is written without
// it, in the same bytes (rawframe.go). The headers' frame (the first of a
// job) is f.hdr's.
func (f *frameWriter) frame(in []byte) error {
	enc := f.enc
	if !f.started {
		enc = f.hdr
	}
	if len(in) > 0 && enc == f.enc {
		// Raw blocks (rawframe.go): at most 3 bytes of block header per
		// block, 14 of frame header and checksum.
		dst := f.out.w.(*frameBuf)
		n := len(dst.b)
		dst.grow(len(in) + 3*(len(in)/frameBlock+1) + 14)
		var ok bool
		if dst.b, ok = f.raw.appendFrame(dst.b, in); ok {
			f.out.n += int64(len(dst.b) - n)
			return nil
		}
	}
	if len(in) > 0 && len(in) < frameBlock {
		dst := f.out.w.(*frameBuf)
		n := len(dst.b)
		dst.grow(len(in) + len(in)>>7 + 64)
		dst.b = enc.EncodeAll(in, dst.b)
		f.out.n += int64(len(dst.b) - n)
		return nil
	}
	enc.Reset(&f.out)
	if _, err := enc.Write(in); err != nil {
		return err
	}
	return enc.Close()
}

// frameBlock is the zstd encoder's block size (its default, the format's
// largest).
const frameBlock = 128 << 10

// frameBuf is a job's frames: a buffer from bufs, grown through it.
type frameBuf struct{ b []byte }

func (fb *frameBuf) Write(p []byte) (int, error) {
	fb.grow(len(p))
	fb.b = append(fb.b, p...)
	return len(p), nil
}

// grow makes room for n more bytes.
func (fb *frameBuf) grow(n int) {
	if len(fb.b)+n <= cap(fb.b) {
		return
	}
	nb := getBuf(max(2*cap(fb.b), len(fb.b)+n))[:len(fb.b)]
	copy(nb, fb.b)
	putBuf(fb.b)
	fb.b = nb
}

// end closes the last frame of the layer (the headers after the last
// content and the end of archive). containers/storage copies what its tar
// reader left of the stream (nothing) into the encoder with io.Copy, whose
// ReadFrom first ends a block: the frame then has no content size in its
// header and an empty last block. The same calls give the same bytes.
func (f *frameWriter) end() error {
	if _, err := f.cur.ReadFrom(bytes.NewReader(nil)); err != nil {
		return err
	}
	return f.cur.Close()
}

func (f *frameWriter) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if !f.started {
		if err := f.closeFrame(); err != nil {
			return err
		}
		f.started = true
		f.start, f.frameStart = f.out.n, f.out.n
	}
	if f.src == nil {
		if _, err := f.cur.Write(p); err != nil {
			return err
		}
		f.chunkHash.Write(p)
	}
	f.consumed += int64(len(p))
	return nil
}

var zeroBlock [32 << 10]byte

func (f *frameWriter) writeZeros(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBlock)))
		if err := f.write(zeroBlock[:k]); err != nil {
			return err
		}
		if f.whole != nil {
			f.whole.Write(zeroBlock[:k])
		}
		n -= k
	}
	return nil
}

// cut ends a chunk where containers/storage's loop restarts compression:
// at a rolling-sum split, around a run of zeros, at the end of the content.
func (f *frameWriter) cut(zeros bool) error {
	if !f.started {
		return nil
	}
	if err := f.closeFrame(); err != nil {
		return err
	}
	if size := f.consumed - f.lastChunkEnd; size > 0 {
		c := fileChunk{ChunkOffset: f.lastChunkEnd, Offset: f.frameStart, Size: size, Zeros: zeros}
		if f.src == nil { // else hashed at the end
			c.Digest = "sha256:" + hex.EncodeToString(f.chunkHash.Sum(nil))
		}
		f.chunks = append(f.chunks, c)
	}
	f.frameStart = f.out.n
	f.lastChunkEnd = f.consumed
	f.chunkHash.Reset()
	return nil
}

// feed consumes content. Runs of zeros shorter than a hole are data like
// any other bytes: they are rolled with them and written with them, in
// one piece up to the next cut. A run of zeros that reaches the end of p
// is held back until its length says whether it is data (rolled then) or
// a hole.
func (f *frameWriter) feed(p []byte) error {
	i := 0
	if f.zeros > 0 { // a run of zeros went on past the previous piece
		j := 0
		for j < len(p) && p[j] == 0 {
			j++
		}
		f.zeros += int64(j)
		if j == len(p) {
			return nil
		}
		if err := f.resolveZeros(); err != nil {
			return err
		}
		i = j
	}
	seg := i // start of the bytes rolled but not yet written
	for x := i; ; {
		z := bytes.IndexByte(p[x:], 0)
		if z < 0 {
			break
		}
		a := x + z
		b := a + 1
		for b < len(p) && p[b] == 0 {
			b++
		}
		if b < len(p) && b-a < chunkedHolesThreshold {
			x = b // data: rolled with what surrounds it
			continue
		}
		// A hole, or zeros up to the end of p: roll and write what comes
		// before them, then settle them apart.
		if err := f.rollRun(p, i, a, &seg); err != nil {
			return err
		}
		if err := f.data(p[seg:a]); err != nil {
			return err
		}
		f.zeros = int64(b - a)
		if b == len(p) {
			return nil
		}
		if err := f.resolveZeros(); err != nil {
			return err
		}
		i, seg, x = b, b, b
	}
	if err := f.rollRun(p, i, len(p), &seg); err != nil {
		return err
	}
	return f.data(p[seg:])
}

// rollRun rolls p[i:z], cutting a chunk after each split (the bytes from
// *seg to the split are written first). The byte leaving the window is
// the window's for the first 64 bytes of the run, then p[k-64]. Only
// ChunkRolling rolls.
func (f *frameWriter) rollRun(p []byte, i, z int, seg *int) error {
	if i >= z || !f.rolling {
		return nil
	}
	r := &f.rs
	s1, s2, wofs := r.s1, r.s2, r.wofs
	head := min(z, i+rollWindow)
	for k := i; k < head; k++ {
		w := (wofs + uint32(k-i)) & (rollWindow - 1)
		drop := uint32(r.window[w])
		r.window[w] = p[k]
		s1 += uint32(p[k]) - drop
		s2 += s1 - rollWindow*(drop+rollCharOffset)
		if s2&rollSplitMask == rollSplitMask {
			if err := f.split(p, k, seg); err != nil {
				return err
			}
		}
	}
	if head < z {
		in := p[head:z]
		out := p[head-rollWindow : z-rollWindow]
		out = out[:len(in)]
		// Eight bytes at a time where the CPU can (rollScan; the sums
		// are then right in their low 16 bits only, all a split reads),
		// then what is left a byte at a time.
		j := 0
		for {
			k, n1, n2, found := rollScan(in[j:], out[j:], s1, s2)
			s1, s2, j = n1, n2, j+k
			if !found {
				break
			}
			if err := f.split(p, head+j-1, seg); err != nil {
				return err
			}
		}
		for ; j < len(in); j++ {
			drop := uint32(out[j])
			s1 += uint32(in[j]) - drop
			s2 += s1 - rollWindow*(drop+rollCharOffset)
			if s2&rollSplitMask == rollSplitMask {
				if err := f.split(p, head+j, seg); err != nil {
					return err
				}
			}
		}
	}
	if n := z - i; n >= rollWindow {
		copy(r.window[:], p[z-rollWindow:z])
		r.wofs = 0
	} else {
		r.wofs = (wofs + uint32(n)) & (rollWindow - 1)
	}
	r.s1, r.s2 = s1, s2
	return nil
}

// split ends a chunk after p[k].
func (f *frameWriter) split(p []byte, k int, seg *int) error {
	if err := f.data(p[*seg : k+1]); err != nil {
		return err
	}
	if err := f.cut(false); err != nil {
		return err
	}
	*seg = k + 1
	return nil
}

// data writes bytes already rolled.
func (f *frameWriter) data(p []byte) error {
	if f.whole != nil {
		f.whole.Write(p)
	}
	return f.write(p)
}

// resolveZeros settles a finished run of zeros: a hole (a chunk of its own,
// cut before and after, not split by the rolling sum) or data.
func (f *frameWriter) resolveZeros() error {
	n := f.zeros
	f.zeros = 0
	if n >= chunkedHolesThreshold {
		if err := f.cut(false); err != nil {
			return err
		}
		f.rs.rollZeros(n)
		if err := f.writeZeros(n); err != nil {
			return err
		}
		return f.cut(true)
	}
	if !f.rolling {
		return f.writeZeros(n)
	}
	pending := int64(0)
	for range n {
		pending++
		if f.rs.roll(0) {
			if err := f.writeZeros(pending); err != nil {
				return err
			}
			if err := f.cut(false); err != nil {
				return err
			}
			pending = 0
		}
	}
	return f.writeZeros(pending)
}

// finish ends the content: the digest of the whole content (content is the
// whole of it when it was fed in one piece, else nil).
func (f *frameWriter) finish(content []byte) (string, error) {
	if f.zeros > 0 {
		if err := f.resolveZeros(); err != nil {
			return "", err
		}
	}
	if err := f.cut(false); err != nil {
		return "", err
	}
	if f.src != nil && len(f.chunks) == 1 { // the chunk is the content
		d := f.known
		if d == "" {
			d = sha256Digest(f.src)
		}
		f.chunks[0].Digest = d
		return d, nil
	}
	if f.src != nil {
		for i := range f.chunks {
			c := &f.chunks[i]
			c.Digest = sha256Digest(f.src[c.ChunkOffset : c.ChunkOffset+c.Size])
		}
	}
	switch {
	case f.known != "":
		return f.known, nil
	case f.whole != nil:
		return "sha256:" + hex.EncodeToString(f.whole.Sum(nil)), nil
	case len(f.chunks) == 1:
		return f.chunks[0].Digest, nil
	default:
		s := sha256.Sum256(content)
		return "sha256:" + hex.EncodeToString(s[:]), nil
	}
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// rollSum is containers/storage's rolling checksum (bup's, over a 64-byte
// window) that decides where chunks end; a value type so that the loop in
// feed keeps it in registers.
type rollSum struct {
	s1, s2 uint32
	wofs   uint32
	window [rollWindow]byte
}

const (
	rollWindow     = 64
	rollCharOffset = 31
	rollSplitMask  = 1<<chunkedRollsumBits - 1
)

func newRollSum() rollSum {
	return rollSum{s1: rollWindow * rollCharOffset, s2: rollWindow * (rollWindow - 1) * rollCharOffset}
}

// roll adds b and reports whether a chunk ends after it.
func (r *rollSum) roll(b byte) bool {
	drop := uint32(r.window[r.wofs])
	r.s1 += uint32(b) - drop
	r.s2 += r.s1 - rollWindow*(drop+rollCharOffset)
	r.window[r.wofs] = b
	r.wofs = (r.wofs + 1) & (rollWindow - 1)
	return r.s2&rollSplitMask == rollSplitMask
}

// rollZeros adds n zeros (no split is looked for). Once the window holds
// only zeros, more zeros change neither sum.
func (r *rollSum) rollZeros(n int64) {
	k := min(n, rollWindow)
	for range k {
		r.roll(0)
	}
	r.wofs = (r.wofs + uint32(n-k)) & (rollWindow - 1)
}

// chunkedMeta collects the TOC and the tar-split while the layer is written
// in order, and writes them at the end.
type chunkedMeta struct {
	toc      *tocWriter
	ctoc     pieces // the compressed TOC
	tocHash  hash.Hash
	tocZstd  *zstd.Encoder
	tsBuf    pieces
	tsDigest hash.Hash
	tsCount  countWriter
	tsZstd   *zstd.Encoder
	packer   *tarSplitPacker
}

// newChunkedMeta: ChunkFiles compresses the TOC and the tar-split at zstd's
// fastest level. The tar-split is some 2.5 KB of JSON per entry (each tar
// header in base64), 164 MB for the 65k-entry tree: at zstdLevel its
// encoder took ~0.8 CPU-seconds, at the fastest ~0.45, and its output is
// no larger (the JSON repeats itself at short distances).
func newChunkedMeta(c Chunking) (*chunkedMeta, error) {
	m := &chunkedMeta{tsDigest: sha256.New(), tocHash: sha256.New()}
	level := zstd.EncoderLevelFromZstd(zstdLevel)
	if c != ChunkRolling {
		level = zstd.SpeedFastest
	}
	tz, err := zstd.NewWriter(io.MultiWriter(&m.ctoc, m.tocHash), zstd.WithEncoderLevel(level))
	if err != nil {
		return nil, err
	}
	m.tocZstd, m.toc = tz, newTOCWriter(tz)
	z, err := zstd.NewWriter(io.MultiWriter(&m.tsBuf, m.tsDigest), zstd.WithEncoderLevel(level))
	if err != nil {
		return nil, err
	}
	m.tsZstd = z
	m.tsCount = countWriter{w: z}
	m.packer = newTarSplitPacker(&m.tsCount)
	return m, nil
}

func (m *chunkedMeta) segment(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return m.packer.add(storage.SegmentType, "", 0, b)
}

// file records one tar entry: its tar-split record (crc: the crc64 of its
// content, nil without content) and its TOC entry.
func (m *chunkedMeta) file(h *tar.Header, crc []byte, e ...tocEntry) error {
	if err := m.packer.add(storage.FileType, h.Name, h.Size, crc); err != nil {
		return err
	}
	for i := range e {
		if err := m.toc.add(&e[i]); err != nil {
			return err
		}
	}
	return nil
}

// tarSplitPacker writes tar-split's entries as its JSON packer
// (storage.NewJSONPacker) does, a JSON document per line, without
// encoding/json's reflection (the ordered writer writes one or two per tar
// entry).
type tarSplitPacker struct {
	w    io.Writer
	pos  int
	seen map[string]struct{}
	buf  []byte
}

func newTarSplitPacker(w io.Writer) *tarSplitPacker {
	return &tarSplitPacker{w: w, seen: map[string]struct{}{}}
}

// add writes an entry (storage.Entry{Type: typ, Size: size, Payload:
// payload} named name with SetName), refusing a file name seen before.
func (p *tarSplitPacker) add(typ storage.Type, name string, size int64, payload []byte) error {
	var raw []byte
	if name != "" && !utf8.ValidString(name) {
		raw, name = []byte(name), ""
	}
	if typ == storage.FileType {
		clean := filepath.Clean(name)
		if raw != nil {
			clean = filepath.Clean(string(raw))
		}
		if _, ok := p.seen[clean]; ok {
			return storage.ErrDuplicatePath
		}
		p.seen[clean] = struct{}{}
	}
	b := append(p.buf[:0], `{"type":`...)
	b = strconv.AppendInt(b, int64(typ), 10)
	var err error
	if name != "" {
		if b, err = appendJSONString(append(b, `,"name":`...), name); err != nil {
			return err
		}
	}
	if len(raw) > 0 {
		b = append(base64.StdEncoding.AppendEncode(append(b, `,"name_raw":"`...), raw), '"')
	}
	if size != 0 {
		b = strconv.AppendInt(append(b, `,"size":`...), size, 10)
	}
	if payload == nil {
		b = append(b, `,"payload":null`...)
	} else {
		b = append(base64.StdEncoding.AppendEncode(append(b, `,"payload":"`...), payload), '"')
	}
	b = strconv.AppendInt(append(b, `,"position":`...), int64(p.pos), 10)
	b = append(b, "}\n"...)
	p.buf = b
	if _, err := p.w.Write(b); err != nil {
		return err
	}
	p.pos++
	return nil
}

// contentEntries returns the TOC entries of a file with content.
func contentEntries(e tocEntry, digest string, start, end int64, chunks []fileChunk) []tocEntry {
	e.Digest, e.Offset, e.EndOffset = digest, start, end
	out := []tocEntry{e}
	if len(chunks) > 1 {
		for i, c := range chunks {
			if i > 0 {
				out = append(out, tocEntry{Type: chunked.TypeChunk, Name: e.Name, ChunkOffset: c.ChunkOffset})
			}
			o := &out[len(out)-1]
			o.ChunkSize, o.Offset, o.ChunkDigest = c.Size, c.Offset, c.Digest
			if c.Zeros {
				o.ChunkType = "zeros"
			}
		}
	}
	return out
}

// finish appends the TOC, the tar-split and the footer to dst (offset: the
// blob bytes written so far) and sets the layer annotations.
func (m *chunkedMeta) finish(dst io.Writer, offset int64, annotations map[string]string) error {
	if err := m.tsZstd.Close(); err != nil {
		return err
	}
	if err := m.toc.end("sha256:" + hex.EncodeToString(m.tsDigest.Sum(nil))); err != nil {
		return err
	}
	if err := m.tocZstd.Close(); err != nil {
		return err
	}
	tocLen := m.toc.n
	const frameHeader = 8
	tocOff := offset + frameHeader
	annotations[chunked.AnnotationTOCChecksum] = "sha256:" + hex.EncodeToString(m.tocHash.Sum(nil))
	annotations[chunked.AnnotationTOCPosition] = fmt.Sprintf("%d:%d:%d:%d", tocOff, m.ctoc.Len(), tocLen, chunkedManifestType)
	tsOff := tocOff + int64(m.ctoc.Len()) + frameHeader
	annotations[chunked.AnnotationTarSplitPosition] = fmt.Sprintf("%d:%d:%d", tsOff, m.tsBuf.Len(), m.tsCount.n)
	footer := make([]byte, 64)
	for i, v := range []int64{tocOff, int64(m.ctoc.Len()), int64(tocLen), chunkedManifestType, tsOff, int64(m.tsBuf.Len()), m.tsCount.n} {
		binary.LittleEndian.PutUint64(footer[8*i:], uint64(v))
	}
	copy(footer[56:], chunkedFooterMagic)
	skippable := func(n int, write func() error) error {
		var hdr [frameHeader]byte
		copy(hdr[:], zstdSkippableMagic)
		binary.LittleEndian.PutUint32(hdr[4:], uint32(n))
		if _, err := dst.Write(hdr[:]); err != nil {
			return err
		}
		return write()
	}
	if err := skippable(m.ctoc.Len(), func() error { _, err := m.ctoc.WriteTo(dst); return err }); err != nil {
		return err
	}
	if err := skippable(m.tsBuf.Len(), func() error { _, err := m.tsBuf.WriteTo(dst); return err }); err != nil {
		return err
	}
	if err := skippable(len(footer), func() error { _, err := dst.Write(footer); return err }); err != nil {
		return err
	}
	return nil
}
