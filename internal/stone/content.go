package stone

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// ErrDigestMismatch is wrapped by errors of content whose XXH3-128 differs
// from its index digest.
var ErrDigestMismatch = errors.New("XXH3-128 digest mismatch")

// VerifyContentChecksum reads the stored Content body once and checks its
// XXH3-64 against the payload header. A package without Content passes.
func (p *Package) VerifyContentChecksum(ctx context.Context) error {
	h := p.content
	if h == nil {
		return nil
	}
	sum := xxh3.New()
	buf := make([]byte, 1<<20)
	sec := io.NewSectionReader(p.r, h.BodyOffset(), int64(h.StoredSize))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := sec.Read(buf)
		sum.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("stone %s: reading Content payload: %w", p.Name, err)
		}
	}
	if got := sum.Sum64(); got != h.Checksum {
		return p.errorf(h.Offset, "Content payload checksum mismatch: XXH3-64 of the stored body is %016x, header says %016x", got, h.Checksum)
	}
	return nil
}

// OpenContent returns the decompressed Content payload as a stream, capped
// at its plain size (a longer stream is an error at the cap, a shorter one
// at its end). It does not verify the stored checksum. Close releases the
// decoder.
func (p *Package) OpenContent() (io.ReadCloser, error) {
	h := p.content
	if h == nil {
		return nil, p.errorf(-1, "no Content payload")
	}
	sec := io.NewSectionReader(p.r, h.BodyOffset(), int64(h.StoredSize))
	if h.Compression == CompressionNone {
		return &contentReader{p: p, r: sec, left: h.PlainSize}, nil
	}
	dec, err := getDecoder(sec, h.PlainSize)
	if err != nil {
		return nil, fmt.Errorf("stone %s: zstd: %w", p.Name, err)
	}
	return &contentReader{p: p, r: dec, left: h.PlainSize, dec: dec}, nil
}

// contentReader yields exactly PlainSize bytes or an error naming the file.
type contentReader struct {
	p    *Package
	r    io.Reader
	dec  *zstd.Decoder
	left uint64
	done bool
}

func (c *contentReader) Read(b []byte) (int, error) {
	if c.left == 0 {
		if !c.done {
			// The stream must end exactly here.
			var one [1]byte
			n, err := io.ReadFull(c.r, one[:])
			if n > 0 {
				return 0, c.p.errorf(c.p.content.Offset, "Content payload decompresses to more than the %d bytes its header says", c.p.content.PlainSize)
			}
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				return 0, c.p.errorf(c.p.content.Offset, "Content payload: zstd: %v", err)
			}
			c.done = true
		}
		return 0, io.EOF
	}
	if uint64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= uint64(n)
	if err == io.EOF {
		if c.left > 0 {
			return n, c.p.errorf(c.p.content.Offset, "Content payload decompresses to %d bytes, header says %d", c.p.content.PlainSize-c.left, c.p.content.PlainSize)
		}
		err = nil
	} else if err != nil {
		err = c.p.errorf(c.p.content.Offset, "Content payload: zstd: %v", err)
	}
	return n, err
}

func (c *contentReader) Close() error {
	if c.dec != nil {
		putDecoder(c.dec, c.p.content.PlainSize)
		c.dec = nil
	}
	return nil
}

// WalkContent checks the Content payload's stored checksum, then
// decompresses it once and calls fn for each distinct non-empty index range
// in content order, with a reader of exactly that range's bytes. The reader
// checks the range's XXH3-128 as it reaches the end: on a mismatch the last
// Read returns an error (wrapping ErrDigestMismatch) instead of success, so a
// store that commits only what it read without error never holds wrong
// content. fn may leave the reader unread: the bytes are skipped. Ranges
// that overlap are an error.
func (p *Package) WalkContent(ctx context.Context, fn func(e IndexEntry, r io.Reader) error) error {
	if err := p.Unreadable(); err != nil {
		return err
	}
	entries := make([]IndexEntry, 0, len(p.Index))
	for _, e := range p.Index {
		if e.End > e.Start {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 && p.content == nil {
		return nil
	}
	if err := p.VerifyContentChecksum(ctx); err != nil {
		return err
	}
	slices.SortFunc(entries, func(a, b IndexEntry) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.End, b.End))
	})
	entries = slices.Compact(entries)
	rc, err := p.OpenContent()
	if err != nil {
		return err
	}
	defer rc.Close()
	var pos uint64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Start < pos {
			return p.errorf(-1, "Index range [%d, %d) (%s) overlaps the range ending at %d", e.Start, e.End, e.Digest, pos)
		}
		if err := p.skip(rc, e.Start-pos); err != nil {
			return err
		}
		rr := &rangeReader{p: p, src: rc, e: e, left: e.Size(), h: xxh3.New()}
		if err := fn(e, rr); err != nil {
			return err
		}
		if rr.err != nil {
			return rr.err
		}
		if err := p.skip(rc, rr.left); err != nil {
			return err
		}
		pos = e.End
	}
	// Drain the rest: the stream must hold exactly PlainSize bytes.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	return nil
}

func (p *Package) skip(r io.Reader, n uint64) error {
	if n == 0 {
		return nil
	}
	k, err := io.CopyN(io.Discard, r, int64(n))
	if err == io.EOF {
		return p.errorf(-1, "Content ends %d bytes early", n-uint64(k))
	}
	return err
}

// rangeReader reads one index range and checks its digest at the end.
type rangeReader struct {
	p    *Package
	src  io.Reader
	e    IndexEntry
	left uint64
	h    *xxh3.Hasher
	err  error
}

func (r *rangeReader) Read(b []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	if uint64(len(b)) > r.left {
		b = b[:r.left]
	}
	n, err := r.src.Read(b)
	r.h.Write(b[:n])
	r.left -= uint64(n)
	switch {
	case err == io.EOF && r.left > 0:
		r.err = r.p.errorf(-1, "Content ends inside index range [%d, %d) (%s)", r.e.Start, r.e.End, r.e.Digest)
		return n, r.err
	case err != nil && err != io.EOF:
		r.err = err
		return n, err
	}
	if r.left == 0 {
		if got := XXH128(r.h.Sum128().Bytes()); got != r.e.Digest {
			r.err = fmt.Errorf("stone %s: content [%d, %d): %w: computed %s, index says %s", r.p.Name, r.e.Start, r.e.End, ErrDigestMismatch, got, r.e.Digest)
			return n, r.err
		}
	}
	return n, nil
}
