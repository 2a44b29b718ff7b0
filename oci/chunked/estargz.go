package chunked

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strconv"
)

// estargzFooterSize is the size of the eStargz footer: an empty gzip member
// whose Extra field carries "%016xSTARGZ", the TOC member's offset.
const estargzFooterSize = 51

const estargzTOCName = "stargz.index.json"

// ParseEstargzFooter returns the offset of the TOC's gzip member from the
// last 51 bytes of an eStargz blob of blobSize bytes.
func ParseEstargzFooter(b []byte, blobSize int64) (int64, error) {
	if len(b) != estargzFooterSize {
		return 0, fmt.Errorf("eStargz footer of %d bytes, want %d", len(b), estargzFooterSize)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("eStargz footer: %w", err)
	}
	extra := zr.Header.Extra
	// One Extra subfield: 'S','G', little-endian length 22, then the payload.
	if len(extra) != 4+22 || extra[0] != 'S' || extra[1] != 'G' || extra[2] != 22 || extra[3] != 0 {
		return 0, fmt.Errorf("eStargz footer: Extra field is not one SG subfield of 22 bytes")
	}
	p := extra[4:]
	if string(p[16:]) != "STARGZ" {
		return 0, fmt.Errorf("eStargz footer: no STARGZ marker")
	}
	off, err := strconv.ParseUint(string(p[:16]), 16, 63)
	if err != nil {
		return 0, fmt.Errorf("eStargz footer: TOC offset %q: %w", p[:16], err)
	}
	if int64(off) >= blobSize-estargzFooterSize {
		return 0, fmt.Errorf("eStargz footer: TOC offset %d not inside the blob of %d bytes", off, blobSize)
	}
	return int64(off), nil
}

// ExtractEstargzTOC returns the TOC JSON from the TOC member (the bytes from
// the TOC offset to the footer): a gzip stream holding a tar with the one
// entry stargz.index.json. Expansion is capped at MaxMetadataSize.
func ExtractEstargzTOC(member []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(member))
	if err != nil {
		return nil, fmt.Errorf("eStargz TOC member: %w", err)
	}
	tr := tar.NewReader(io.LimitReader(zr, MaxMetadataSize+4096))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("eStargz TOC member has no %s", estargzTOCName)
		}
		if err != nil {
			return nil, fmt.Errorf("eStargz TOC member: %w", err)
		}
		if h.Name != estargzTOCName {
			continue
		}
		if h.Size < 0 || h.Size > MaxMetadataSize {
			return nil, fmt.Errorf("eStargz TOC of %d bytes exceeds the %d-byte cap", h.Size, MaxMetadataSize)
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return nil, fmt.Errorf("eStargz TOC: %w", err)
		}
		if int64(len(b)) != h.Size {
			return nil, fmt.Errorf("eStargz TOC truncated at %d of %d bytes", len(b), h.Size)
		}
		return b, nil
	}
}
