// Package chunked pulls zstd:chunked and eStargz layers partially: it reads a
// layer's table of contents (TOC) with HTTP range requests, asks a content
// source which regular files it already holds (by plain sha256), fetches only
// the others in merged multi-range requests, checks every fetched file
// against its digest, and rebuilds the layer's exact tar stream from the
// tar-split so the caller can apply it and check its diff_id as if it had
// downloaded the whole layer.
//
// It knows nothing of containers/image: the registry client here is plain
// net/http (containers/image offers range reads only through internal types),
// and callers hand it the credentials and TLS settings they resolved.
package chunked

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Entry types of a TOC, as zstd:chunked and eStargz spell them.
const (
	TypeReg      = "reg"
	TypeChunk    = "chunk"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// MaxMetadataSize caps the uncompressed TOC and tar-split, as containers/storage does.
const MaxMetadataSize = 150 << 20

// DefaultMaxEntries caps the entries of one TOC (the image-wide entry cap of
// the OCI import is 10 million; one layer cannot have more).
const DefaultMaxEntries = 10_000_000

// ErrTOCVersion: a TOC of a version this package does not read (newer
// writers); Prepare falls back to a whole download for it.
var ErrTOCVersion = errors.New("TOC version not supported")

// TOC is a parsed and validated table of contents.
type TOC struct {
	Version        int     `json:"version"`
	Entries        []Entry `json:"entries"`
	TarSplitDigest string  `json:"tarSplitDigest,omitempty"`
}

// Entry is one TOC entry. Only the fields a partial pull uses are kept; the
// metadata of the result comes from the tar stream, not from here.
type Entry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	Size        int64             `json:"size,omitempty"`
	UID         int64             `json:"uid,omitempty"`
	GID         int64             `json:"gid,omitempty"`
	ModTime     string            `json:"modtime,omitempty"`
	DevMajor    int64             `json:"devMajor,omitempty"`
	DevMinor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string]string `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
	ChunkType   string            `json:"chunkType,omitempty"`

	// Clean is Name beneath the root: no leading "./" or "/", no "..".
	Clean string `json:"-"`
	// sha is Digest decoded (regular files with content only).
	sha [32]byte
}

// SHA256 is the decoded content digest of a regular file with content.
func (e *Entry) SHA256() [32]byte { return e.sha }

// CleanName returns name as a path beneath the root ("" for the root itself),
// or an error for absolute names, ".." components and NUL bytes.
func CleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q contains a NUL byte", name)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("name %q is absolute", name)
	}
	n := strings.TrimPrefix(name, "./")
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", fmt.Errorf("name %q leaves the root", name)
		}
	}
	n = path.Clean(n)
	if n == "." {
		n = ""
	}
	return n, nil
}

// ParseDigest decodes "sha256:<64 hex>".
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return d, fmt.Errorf("digest %q is not sha256:<64 lowercase hex>", s)
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// Limits bound what ParseTOC accepts.
type Limits struct {
	// ContentEnd is where file data ends in the blob (the TOC's own start):
	// every file range must lie in [0, ContentEnd).
	ContentEnd int64
	// MaxEntries caps the number of entries (0: DefaultMaxEntries).
	MaxEntries int
	// Estargz: file ranges are gzip members whose end is the next member's
	// start, not an endOffset field.
	Estargz bool
}

// ParseTOC decodes and validates a TOC. Everything a partial pull relies on is
// checked: names beneath the root, known types, digests, file ranges inside
// the blob's content, chunks contiguous and adding up to their file. A TOC
// that fails is refused, never repaired.
func ParseTOC(data []byte, lim Limits) (*TOC, error) {
	if len(data) > MaxMetadataSize {
		return nil, fmt.Errorf("TOC of %d bytes exceeds the %d-byte cap", len(data), MaxMetadataSize)
	}
	var toc TOC
	if err := json.Unmarshal(data, &toc); err != nil {
		return nil, fmt.Errorf("TOC: %w", err)
	}
	if toc.Version != 1 {
		return nil, fmt.Errorf("TOC version %d: %w", toc.Version, ErrTOCVersion)
	}
	maxEntries := lim.MaxEntries
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	if len(toc.Entries) > maxEntries {
		return nil, fmt.Errorf("TOC has %d entries, more than the cap of %d", len(toc.Entries), maxEntries)
	}
	if toc.TarSplitDigest != "" {
		if _, err := ParseDigest(toc.TarSplitDigest); err != nil {
			return nil, fmt.Errorf("TOC tarSplitDigest: %w", err)
		}
	}
	if lim.Estargz {
		if err := estargzEndOffsets(toc.Entries, lim.ContentEnd); err != nil {
			return nil, err
		}
	}
	var file *Entry // the regular file the following chunks belong to
	var next int64  // the chunk offset the next chunk must start at
	for i := range toc.Entries {
		e := &toc.Entries[i]
		if err := checkEntry(e, lim); err != nil {
			return nil, fmt.Errorf("TOC entry %d (%q): %w", i, e.Name, err)
		}
		if e.Type == TypeChunk {
			if file == nil || e.Clean != file.Clean {
				return nil, fmt.Errorf("TOC entry %d (%q): chunk does not follow its file", i, e.Name)
			}
			if e.ChunkOffset != next || e.ChunkSize <= 0 || e.ChunkSize > file.Size-next {
				return nil, fmt.Errorf("TOC entry %d (%q): chunk [%d,+%d) does not continue the file (next byte %d of %d)", i, e.Name, e.ChunkOffset, e.ChunkSize, next, file.Size)
			}
			if e.ChunkType == "" && (e.Offset < file.Offset || e.Offset >= file.EndOffset) {
				return nil, fmt.Errorf("TOC entry %d (%q): chunk at %d lies outside its file's range [%d,%d)", i, e.Name, e.Offset, file.Offset, file.EndOffset)
			}
			next += e.ChunkSize
			continue
		}
		if file != nil && next != file.Size {
			return nil, fmt.Errorf("TOC entry %q: chunks cover %d of its %d bytes", file.Name, next, file.Size)
		}
		file = nil
		if e.Type == TypeReg && e.Size > 0 {
			file = e
			next = e.Size
			if e.ChunkSize > 0 {
				if e.ChunkSize > e.Size {
					return nil, fmt.Errorf("TOC entry %d (%q): first chunk of %d bytes in a file of %d", i, e.Name, e.ChunkSize, e.Size)
				}
				next = e.ChunkSize
			}
		}
	}
	if file != nil && next != file.Size {
		return nil, fmt.Errorf("TOC entry %q: chunks cover %d of its %d bytes", file.Name, next, file.Size)
	}
	return &toc, nil
}

func checkEntry(e *Entry, lim Limits) error {
	clean, err := CleanName(e.Name)
	if err != nil {
		return err
	}
	e.Clean = clean
	if e.Mode < 0 || e.Mode&^0o177777 != 0 {
		return fmt.Errorf("mode %#o out of range", e.Mode)
	}
	if e.UID < 0 || e.GID < 0 || e.UID > 1<<32-1 || e.GID > 1<<32-1 {
		return fmt.Errorf("owner %d:%d out of range", e.UID, e.GID)
	}
	if e.DevMajor < 0 || e.DevMinor < 0 || e.DevMajor > 1<<32-1 || e.DevMinor > 1<<32-1 {
		return fmt.Errorf("device %d:%d out of range", e.DevMajor, e.DevMinor)
	}
	for k, v := range e.Xattrs {
		if k == "" || strings.IndexByte(k, 0) >= 0 {
			return fmt.Errorf("xattr name %q invalid", k)
		}
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return fmt.Errorf("xattr %q: value is not base64: %w", k, err)
		}
	}
	if e.ChunkDigest != "" {
		if _, err := ParseDigest(e.ChunkDigest); err != nil {
			return fmt.Errorf("chunkDigest: %w", err)
		}
	}
	switch e.Type {
	case TypeDir, TypeFifo, TypeChar, TypeBlock:
	case TypeSymlink:
		if e.Linkname == "" {
			return errors.New("symlink without a target")
		}
	case TypeHardlink:
		if e.Linkname == "" {
			return errors.New("hardlink without a target")
		}
		if _, err := CleanName(e.Linkname); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
	case TypeReg:
		if e.Size < 0 {
			return fmt.Errorf("negative size %d", e.Size)
		}
		if e.Size == 0 {
			return nil
		}
		if e.sha, err = ParseDigest(e.Digest); err != nil {
			return err
		}
		return checkRange(e, lim)
	case TypeChunk:
		if e.ChunkType != "" && e.ChunkType != "zeros" {
			return fmt.Errorf("chunk type %q unknown", e.ChunkType)
		}
		if e.ChunkType == "" && (e.Offset < 0 || e.Offset >= lim.ContentEnd) {
			return fmt.Errorf("chunk offset %d outside the blob's content [0,%d)", e.Offset, lim.ContentEnd)
		}
	default:
		return fmt.Errorf("type %q unknown", e.Type)
	}
	return nil
}

func checkRange(e *Entry, lim Limits) error {
	if e.Offset < 0 || e.EndOffset <= e.Offset || e.EndOffset > lim.ContentEnd {
		return fmt.Errorf("range [%d,%d) outside the blob's content [0,%d)", e.Offset, e.EndOffset, lim.ContentEnd)
	}
	return nil
}

// estargzEndOffsets fills EndOffset of regular files: eStargz records only the
// start of each gzip member, and a file's data ends where the next member
// with a larger offset starts (or the TOC does).
func estargzEndOffsets(entries []Entry, contentEnd int64) error {
	end := contentEnd    // start of the next member after entry i
	runEnd := contentEnd // end of the last chunk of the file being walked back
	for i := len(entries) - 1; i >= 0; i-- {
		e := &entries[i]
		if (e.Type != TypeReg || e.Size == 0) && e.Type != TypeChunk {
			continue
		}
		if e.Offset < 0 || e.Offset >= end {
			return fmt.Errorf("TOC entry %d (%q): offset %d not before the next member at %d", i, e.Name, e.Offset, end)
		}
		lastOfRun := i+1 >= len(entries) || entries[i+1].Type != TypeChunk
		if lastOfRun {
			runEnd = end
		}
		if e.Type == TypeReg {
			e.EndOffset = runEnd
		}
		end = e.Offset
	}
	return nil
}
