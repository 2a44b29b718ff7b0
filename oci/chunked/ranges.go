package chunked

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Range is the byte range [Off, Off+Len) of a blob.
type Range struct{ Off, Len int64 }

// End is the first byte after the range.
func (r Range) End() int64 { return r.Off + r.Len }

// RangeReader reads byte ranges of one blob.
type RangeReader interface {
	// ReadRanges fetches ranges (sorted, disjoint, non-empty) and calls fn
	// for each, in order, with exactly its bytes. It fails with an error
	// wrapping ErrTooManyRanges, before calling fn, when the source wants
	// fewer ranges per request, and with ErrRangesRefused when it serves no
	// ranges at all.
	ReadRanges(ctx context.Context, ranges []Range, fn func(Range, io.Reader) error) error
}

var (
	// ErrRangesRefused: the source does not serve byte ranges; download whole.
	ErrRangesRefused = errors.New("range requests refused")
	// ErrTooManyRanges: the source refused this many ranges in one request.
	ErrTooManyRanges = errors.New("too many ranges in one request")
)

// DefaultMaxRanges is how many ranges one request asks for at first (as
// containers/storage does); fewer follow when a registry refuses.
const DefaultMaxRanges = 1024

// MergeRanges sorts ranges, joins touching and overlapping ones, and then
// joins across the smallest gaps until at most max remain. Bytes in joined
// gaps are fetched and thrown away: fewer, larger requests for a little waste.
func MergeRanges(rs []Range, max int) []Range {
	if max < 1 {
		max = 1
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	out := s[:0]
	for _, r := range s {
		if n := len(out); n > 0 && r.Off <= out[n-1].End() {
			if r.End() > out[n-1].End() {
				out[n-1].Len = r.End() - out[n-1].Off
			}
			continue
		}
		out = append(out, r)
	}
	if len(out) <= max {
		return out
	}
	gaps := make([]int64, len(out)-1)
	for i := range gaps {
		gaps[i] = out[i+1].Off - out[i].End()
	}
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	limit := sorted[len(out)-max-1] // joining every gap <= limit leaves <= max ranges
	merged := out[:1]
	for i, g := range gaps {
		if g <= limit {
			merged[len(merged)-1].Len = out[i+1].End() - merged[len(merged)-1].Off
		} else {
			merged = append(merged, out[i+1])
		}
	}
	return merged
}

// readMerged fetches the wanted ranges (sorted, disjoint) through at most
// maxRanges merged ranges per request, halving that number each time the
// source refuses, and calls fn with exactly each wanted range's bytes. It
// returns the merged bytes requested, for the caller's accounting.
func readMerged(ctx context.Context, rr RangeReader, want []Range, maxRanges int, fn func(Range, io.Reader) error) (requested int64, requests int, err error) {
	if len(want) == 0 {
		return 0, 0, nil
	}
	if maxRanges <= 0 {
		maxRanges = DefaultMaxRanges
	}
	for {
		merged := MergeRanges(want, maxRanges)
		i := 0
		requests++
		err := rr.ReadRanges(ctx, merged, func(m Range, r io.Reader) error {
			pos := m.Off
			for ; i < len(want) && want[i].End() <= m.End(); i++ {
				w := want[i]
				if w.Off < pos {
					return fmt.Errorf("range [%d,%d) overlaps the one before", w.Off, w.End())
				}
				if _, err := io.CopyN(io.Discard, r, w.Off-pos); err != nil {
					return fmt.Errorf("reading range [%d,%d): %w", m.Off, m.End(), err)
				}
				lr := &io.LimitedReader{R: r, N: w.Len}
				if err := fn(w, lr); err != nil {
					return err
				}
				if _, err := io.Copy(io.Discard, lr); err != nil {
					return fmt.Errorf("reading range [%d,%d): %w", w.Off, w.End(), err)
				}
				if lr.N != 0 {
					return fmt.Errorf("range [%d,%d) ended %d bytes early", w.Off, w.End(), lr.N)
				}
				pos = w.End()
			}
			return nil
		})
		if errors.Is(err, ErrTooManyRanges) && len(merged) > 1 && i == 0 {
			maxRanges = len(merged) / 2
			continue
		}
		for _, m := range merged {
			requested += m.Len
		}
		if err == nil && i != len(want) {
			err = fmt.Errorf("source served %d of %d ranges", i, len(want))
		}
		return requested, requests, err
	}
}
