package ocipull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/chunked"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/types"
)

// PartialLayers is image pull's LayerFetcher for registries: layers in
// zstd:chunked with a tar-split are read partially (their table of contents
// by range requests, then only the files the store lacks, each checked
// against its sha256; the tar stream is rebuilt from the tar-split, and Pull
// checks it against the diff_id). With AllowUnverified, eStargz and the
// older zstd:chunked without tar-split are read partially too, and their
// tar stream, synthesized from the TOC, cannot be checked. Every other
// layer, every non-docker:// source, and any layer the registry will not
// serve in ranges is downloaded whole (WholeLayers).
type PartialLayers struct {
	State           *state.State
	Sys             *types.SystemContext
	AllowUnverified bool

	mu     sync.Mutex
	regs   map[string]*chunked.Registry
	totals PartialTotals
}

// PartialTotals sums what PartialLayers did over a pull.
type PartialTotals struct {
	PartialLayers int      // layers read partially
	WholeLayers   int      // layers downloaded whole
	Unverified    int      // partial layers whose diff_id could not be checked
	FilesFetched  int      // distinct contents fetched by range requests
	FilesPresent  int      // distinct contents found in the store instead
	BytesFetched  int64    // compressed bytes requested for partial layers (TOCs included)
	BytesSaved    int64    // compressed bytes of the contents found in the store
	Fallbacks     []string // why layers were downloaded whole
}

// Totals reports what the fetcher did so far.
func (p *PartialLayers) Totals() PartialTotals {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.totals
	t.Fallbacks = append([]string(nil), t.Fallbacks...)
	return t
}

func (p *PartialLayers) registry(src types.ImageSource) (*chunked.Registry, error) {
	named := src.Reference().DockerReference()
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.regs[named.Name()]; ok {
		return r, nil
	}
	r, err := PartialRegistry(p.Sys, named)
	if err != nil {
		return nil, err
	}
	if p.regs == nil {
		p.regs = map[string]*chunked.Registry{}
	}
	p.regs[named.Name()] = r
	return r, nil
}

// Fetch implements LayerFetcher.
func (p *PartialLayers) Fetch(ctx context.Context, src types.ImageSource, info types.BlobInfo, progress func(int64)) (LayerStream, error) {
	whole := func(reason error) (LayerStream, error) {
		p.mu.Lock()
		p.totals.WholeLayers++
		if reason != nil {
			p.totals.Fallbacks = append(p.totals.Fallbacks, reason.Error())
		}
		p.mu.Unlock()
		return WholeLayers{}.Fetch(ctx, src, info, progress)
	}
	if src.Reference().Transport().Name() != docker.Transport.Name() || src.Reference().DockerReference() == nil {
		return whole(nil)
	}
	reg, err := p.registry(src)
	if err != nil {
		return nil, err
	}
	// Staged files live in a directory this process locks: should it
	// crash, gc (or the next lock) sees the directory is nobody's.
	stg, err := p.State.NewStaging()
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	var total int64
	opts := chunked.Options{TempDir: stg.Dir, AllowUnverified: p.AllowUnverified, Progress: func(n int64) {
		total += n
		if progress != nil {
			progress(total)
		}
	}}
	desc := chunked.Descriptor{Digest: info.Digest.String(), Size: info.Size, Annotations: info.Annotations}
	l, err := chunked.Prepare(ctx, reg.Blob(desc.Digest), desc, StoreContents{State: p.State}, opts)
	if err != nil {
		stg.Release()
		if errors.Is(err, chunked.ErrFallback) {
			return whole(err)
		}
		return nil, err
	}
	state.Crash(state.CPPullStaged)
	st := l.Stats()
	p.mu.Lock()
	p.totals.PartialLayers++
	if !l.Verified() {
		p.totals.Unverified++
	}
	p.totals.FilesFetched += st.Fetched
	p.totals.FilesPresent += st.Present
	p.totals.BytesFetched += st.MetadataBytes + st.FetchedBytes
	p.totals.BytesSaved += st.PresentBytes
	p.mu.Unlock()
	return &partialStream{l: l, tar: l.Tar(), stg: stg}, nil
}

// partialStream is a partially fetched layer's tar stream.
type partialStream struct {
	l   *chunked.Layer
	tar io.ReadCloser
	stg *state.Staging
}

func (s *partialStream) Read(b []byte) (int, error) { return s.tar.Read(b) }

// Fetched is what the range requests asked the registry for.
func (s *partialStream) Fetched() int64 {
	st := s.l.Stats()
	return st.MetadataBytes + st.FetchedBytes
}

// Unverified says the stream was synthesized from a TOC (no tar-split): its
// sha256 is not the layer's diff_id, and Pull does not compare them.
func (s *partialStream) Unverified() bool { return !s.l.Verified() }

// Close reads the stream to its end (a tar reader stops at the
// end-of-archive blocks; the rebuild reports errors at the end) and removes
// the staged files.
func (s *partialStream) Close() error {
	_, err := io.Copy(io.Discard, s.tar)
	s.tar.Close()
	s.l.Close()
	if rerr := s.stg.Release(); err == nil {
		err = rerr
	}
	return err
}
