package ocipull

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci"
	"github.com/mossfs/mossfs/oci/layer"
	"github.com/mossfs/mossfs/tree"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"
)

// ParseReference parses a containers-transport reference as podman and
// skopeo spell it: docker://REGISTRY/NAME:TAG|@DIGEST, oci:DIR[:REF],
// oci-archive:FILE, docker-archive:FILE, containers-storage:NAME, dir:DIR.
func ParseReference(s string) (types.ImageReference, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("image reference %q: want TRANSPORT:REFERENCE (docker://, oci:, oci-archive:, docker-archive:, containers-storage:, dir:)", s)
	}
	t := transports.Get(name)
	if t == nil {
		return nil, fmt.Errorf("image reference %q: unknown transport %q (docker, oci, oci-archive, docker-archive, containers-storage, dir)", s, name)
	}
	ref, err := t.ParseReference(rest)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", s, err)
	}
	return ref, nil
}

// PullOptions tune Pull.
type PullOptions struct {
	// Name recorded for the image (default: the reference without its
	// transport, e.g. "registry/name:tag").
	Name string
	// Sys carries platform choice, auth file, credentials and TLS options,
	// as containers/image reads them.
	Sys *types.SystemContext
	// PolicyPath: policy.json (default: the system's, as podman).
	PolicyPath string
	// Limits cap the layers' expansion (zero: defaults).
	Limits layer.Limits
	// Fetcher yields layers' tar streams (default: WholeLayers).
	Fetcher LayerFetcher
	// Progress, if set, receives per-layer progress.
	Progress Progress
	// NoVerifySeal skips the check of the config's composefs label
	// (LabelComposefs) against the image composed from the layers.
	NoVerifySeal bool
}

// Progress receives what a pull is doing; implementations draw bars.
type Progress interface {
	// Layer starts a layer of size compressed bytes and returns the
	// function called with the bytes read so far, and one to end it.
	Layer(digest string, size int64) (advance func(n int64), done func())
}

// LayerFetcher yields a layer's uncompressed tar stream. Pull checks the
// stream's sha256 against the config's diff_id after applying it, so a
// fetcher need not; Fetched reports the bytes it moved over the network.
type LayerFetcher interface {
	Fetch(ctx context.Context, src types.ImageSource, info types.BlobInfo, progress func(int64)) (LayerStream, error)
}

// LayerStream is a fetched layer: its tar stream, and after it is read to
// the end, Close checks what the fetcher can (the blob's digest).
type LayerStream interface {
	io.Reader
	// Close ends the stream; after a complete read it fails if the blob's
	// digest did not match.
	Close() error
	// Fetched: bytes transferred for this layer.
	Fetched() int64
}

// WholeLayers downloads each layer whole through the image source, checks
// its digest and decompresses it (gzip, zstd, zstd:chunked read as zstd,
// or none).
type WholeLayers struct{}

// Fetch implements LayerFetcher.
func (WholeLayers) Fetch(ctx context.Context, src types.ImageSource, info types.BlobInfo, progress func(int64)) (LayerStream, error) {
	rc, _, err := src.GetBlob(ctx, info, none.NoCache)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	if err := info.Digest.Validate(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	w := &wholeLayer{blob: rc, verifier: info.Digest.Verifier(), progress: progress, digest: info.Digest, size: info.Size}
	w.counted = &countingReader{r: io.TeeReader(rc, w.verifier), fn: progress}
	dec, _, err := compression.AutoDecompress(w.counted)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	w.tar = dec
	return w, nil
}

type wholeLayer struct {
	blob     io.ReadCloser
	counted  *countingReader
	tar      io.ReadCloser
	verifier digest.Verifier
	progress func(int64)
	digest   digest.Digest
	size     int64
}

func (w *wholeLayer) Read(p []byte) (int, error) { return w.tar.Read(p) }
func (w *wholeLayer) Fetched() int64             { return w.counted.n }
func (w *wholeLayer) Close() error {
	// Whatever the compressed stream holds past the end of the tar is
	// part of the blob's digest.
	_, err := io.Copy(io.Discard, w.counted)
	w.tar.Close()
	w.blob.Close()
	if err != nil {
		return fmt.Errorf("layer %s: %w", w.digest, err)
	}
	if w.size > 0 && w.counted.n != w.size {
		return fmt.Errorf("layer %s: %d bytes, the manifest says %d", w.digest, w.counted.n, w.size)
	}
	if !w.verifier.Verified() {
		return fmt.Errorf("layer %s: the blob does not match its digest", w.digest)
	}
	return nil
}

type countingReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.fn != nil && n > 0 {
		c.fn(c.n)
	}
	return n, err
}

// PullResult says what a pull did.
type PullResult struct {
	Image          *state.ContainerImage `json:"image"`
	AlreadyPresent bool                  `json:"already_present"`
	Layers         int                   `json:"layers"`
	FetchedBytes   int64                 `json:"fetched_bytes"`   // network bytes of layers
	Files          int                   `json:"files"`           // regular files stored as objects
	FilesPresent   int                   `json:"files_present"`   // of those, already in the store
	BytesPresent   int64                 `json:"bytes_present"`   // their uncompressed bytes: saved
	BytesNew       int64                 `json:"bytes_new"`       // uncompressed bytes of new objects
	ObjectsRemoved int                   `json:"objects_removed"` // after a refusal (never in a result)
	// UnverifiedLayers were pulled partially without a tar-split: their
	// diff_id could not be checked (--insecure-allow-unpredictable-image-contents).
	UnverifiedLayers int `json:"unverified_layers,omitempty"`
	// Partial: what PartialLayers fetched by range requests and saved.
	Partial *PartialTotals `json:"partial,omitempty"`
}

// Pull reads the image ref names into the store st: it picks the platform
// instance of an index, checks the signature policy, applies the layers in
// order (each checked against its digest and diff_id), and records the image
// once everything checked out. A refused pull leaves the store as it was:
// the objects it added are removed, and no index link, record or name is
// written.
func Pull(ctx context.Context, st *state.State, refStr string, opts PullOptions) (*PullResult, error) {
	ref, err := ParseReference(refStr)
	if err != nil {
		return nil, err
	}
	sys := opts.Sys
	if sys == nil {
		sys = &types.SystemContext{}
	}
	if opts.Fetcher == nil {
		opts.Fetcher = WholeLayers{}
	}
	name := opts.Name
	if name == "" {
		name = strings.TrimPrefix(ref.StringWithinTransport(), "//")
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", refStr, err)
	}
	defer src.Close()
	raw, mt, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", refStr, err)
	}
	var instance *digest.Digest
	if manifest.MIMETypeIsMultiImage(mt) {
		list, err := manifest.ListFromBlob(raw, mt)
		if err != nil {
			return nil, fmt.Errorf("%s: index: %w", refStr, err)
		}
		d, err := list.ChooseInstance(sys)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", refStr, err)
		}
		instance = &d
	}
	unparsed := image.UnparsedInstance(src, instance)
	if err := checkPolicy(ctx, opts.PolicyPath, sys, unparsed); err != nil {
		return nil, fmt.Errorf("%s: %w", refStr, err)
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", refStr, err)
	}
	manRaw, _, err := img.Manifest(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", refStr, err)
	}
	manDigest, err := manifest.Digest(manRaw)
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", refStr, err)
	}
	configBlob, err := img.ConfigBlob(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", refStr, err)
	}
	configDigest := digest.FromBytes(configBlob)
	cfg, err := img.OCIConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", refStr, err)
	}
	platform := cfg.OS + "/" + cfg.Architecture
	if cfg.Variant != "" {
		platform += "/" + cfg.Variant
	}

	lk, err := st.Lock()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	res := &PullResult{}
	if have, err := st.FindContainer(configDigest.String()); err == nil {
		res.AlreadyPresent = true
		res.Image = have
		if !contains(have.Names, name) {
			// Only the name is new: the record gains it.
			if res.Image, err = st.NameContainer(have, name); err != nil {
				return nil, err
			}
		}
		return res, nil
	}

	// A source may serve its layers as other blobs than the manifest
	// names (containers-storage: uncompressed, by diff_id), as for a copy.
	infos, err := img.LayerInfosForCopy(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", refStr, err)
	}
	if infos == nil {
		infos = img.LayerInfos()
	}
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) != len(infos) {
		return nil, fmt.Errorf("%s: the config lists %d diff_ids for %d layers", refStr, len(diffIDs), len(infos))
	}
	stg := &stager{st: st, seen: map[[32]byte]bool{}}
	ok := false
	defer func() {
		if !ok {
			res.ObjectsRemoved = stg.discard()
		}
	}()
	ap := layer.NewApplier(stg, opts.Limits)
	rec := state.ContainerImage{ConfigDigest: configDigest.String(), ManifestDigest: manDigest.String(),
		Names: []string{name}, Source: refStr, Platform: platform}
	var own []*tree.Node
	for i, info := range infos {
		lname := info.Digest.String()
		var advance func(int64)
		done := func() {}
		if opts.Progress != nil {
			advance, done = opts.Progress.Layer(lname, info.Size)
		}
		ls, err := opts.Fetcher.Fetch(ctx, src, info, advance)
		if err != nil {
			done()
			return nil, fmt.Errorf("%s: %w", refStr, err)
		}
		h := sha256.New()
		tarStream := layer.CapReader(io.TeeReader(ls, h), info.Size, opts.Limits, lname)
		lt, err := ap.ApplyCompressed(tarStream, lname, info.Size)
		cerr := ls.Close()
		done()
		res.FetchedBytes += ls.Fetched()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", refStr, err)
		}
		// A partial layer without a tar-split (allowed only on request) is
		// synthesized from its TOC: its digest is not the diff_id.
		if u, ok := ls.(interface{ Unverified() bool }); ok && u.Unverified() {
			res.UnverifiedLayers++
		} else if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != diffIDs[i] {
			return nil, fmt.Errorf("%s: layer %s: its tar stream's digest %s does not match the config's diff_id %s", refStr, lname, got, diffIDs[i])
		}
		own = append(own, lt)
		rec.Layers = append(rec.Layers, state.ContainerLayer{Digest: lname, DiffID: diffIDs[i].String(), MediaType: info.MediaType, Size: info.Size})
	}
	// A sealed image (containers.composefs.fsverity) must compose to the
	// image its label names; refused, nothing of it stays (the deferred
	// discard removes the staged objects).
	if !opts.NoVerifySeal {
		if _, err := oci.VerifySeal(cfg.Config.Labels, ap.Root); err != nil {
			return nil, fmt.Errorf("%s: %w", refStr, err)
		}
	}
	// Every layer checked out: the contents get their index links, then
	// the image, its directory and its record.
	if err := indexAll(st, stg.objects); err != nil {
		return nil, err
	}
	out, err := st.AddContainer(state.ContainerAdd{Record: rec, Config: configBlob, Manifest: manRaw, Root: ap.Root, Layers: own})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", refStr, err)
	}
	ok = true
	res.Image = out
	res.Layers = len(infos)
	if pf, ok := opts.Fetcher.(*PartialLayers); ok {
		t := pf.Totals()
		res.Partial = &t
	}
	res.Files, res.FilesPresent = len(stg.objects), stg.present
	res.BytesPresent, res.BytesNew = stg.presentBytes, stg.newBytes
	return res, nil
}

// indexWorkers: index links made at once. Each link is a symlink whose
// target is too long for the inode: the kernel allocates an inode and a
// block, and several in flight overlap that work (and its waits).
const indexWorkers = 4

// indexAll gives every object its sha256 index link.
func indexAll(st *state.State, objects []stagedObject) error {
	var g errgroup.Group
	g.SetLimit(indexWorkers)
	const chunk = 256
	for i := 0; i < len(objects); i += chunk {
		part := objects[i:min(i+chunk, len(objects))]
		g.Go(func() error {
			for _, o := range part {
				if err := st.IndexAdd(o.sha, o.verity); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func checkPolicy(ctx context.Context, path string, sys *types.SystemContext, unparsed types.UnparsedImage) error {
	var pol *signature.Policy
	var err error
	if path != "" {
		pol, err = signature.NewPolicyFromFile(path)
	} else {
		pol, err = signature.DefaultPolicy(sys)
	}
	if err != nil {
		return fmt.Errorf("signature policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(pol)
	if err != nil {
		return fmt.Errorf("signature policy: %w", err)
	}
	defer pc.Destroy()
	if _, err := pc.IsRunningImageAllowed(ctx, unparsed); err != nil {
		return fmt.Errorf("refused by the signature policy: %w", err)
	}
	return nil
}

// stager stores a pull's contents: each file is hashed (sha256 for the
// index, fs-verity for its object) once, as it is read and stored, so the
// pull knows which objects it added (and removes them if the pull is
// refused) and which were present (the summary's bytes saved).
type stager struct {
	st           *state.State
	mu           sync.Mutex
	sha          hash.Hash
	buf          []byte // Put's, grown up to inMemoryMax
	objects      []stagedObject
	seen         map[[32]byte]bool
	added        [][32]byte
	present      int
	presentBytes int64
	newBytes     int64
}

type stagedObject struct{ sha, verity [32]byte }

// inMemoryMax: contents up to this size are read into memory and hashed
// before anything is written, so one the store holds costs no write; larger
// ones stream into the store while they are hashed.
const inMemoryMax = 8 << 20

func (s *stager) Put(r io.Reader) ([32]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf == nil {
		s.buf = make([]byte, 1<<20)
	}
	n, err := io.ReadFull(r, s.buf)
	for err == nil && len(s.buf) < inMemoryMax {
		s.buf = append(s.buf, make([]byte, len(s.buf))...)
		var m int
		m, err = io.ReadFull(r, s.buf[n:])
		n += m
	}
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		b := s.buf[:n]
		d, how, err := s.st.Store().PutBytesHow(b)
		if err != nil {
			return d, err
		}
		s.record(sha256.Sum256(b), d, int64(n), how)
		return d, nil
	case nil:
	default:
		return [32]byte{}, err
	}
	// Larger than inMemoryMax.
	if s.sha == nil {
		s.sha = sha256.New()
	}
	s.sha.Reset()
	cr := &countingReader{r: io.TeeReader(io.MultiReader(bytes.NewReader(s.buf[:n]), r), s.sha)}
	d, how, err := s.st.Store().PutHow(cr)
	if err != nil {
		return d, err
	}
	var sha [32]byte
	s.sha.Sum(sha[:0])
	s.record(sha, d, cr.n, how)
	return d, nil
}

// KeepInline stores the content of a file the tree inlines too, so that
// the sha256 index offers it to later partial pulls (layer.InlineKeeper).
func (s *stager) KeepInline(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, how, err := s.st.Store().PutHow(bytes.NewReader(b))
	if err != nil {
		return err
	}
	s.record(sha256.Sum256(b), d, int64(len(b)), how)
	return nil
}

// record counts content sha (object d, size bytes) for the pull, once.
func (s *stager) record(sha, d [32]byte, size int64, how cas.How) {
	if s.seen[d] {
		return
	}
	s.seen[d] = true
	s.objects = append(s.objects, stagedObject{sha: sha, verity: d})
	if how == cas.Present {
		s.present++
		s.presentBytes += size
	} else {
		s.added = append(s.added, d)
		s.newBytes += size
	}
}

// discard removes the objects this pull added, and syncs: the removal is
// durable and the store's batch marker retired, as before the pull.
func (s *stager) discard() int {
	for _, d := range s.added {
		s.st.Store().Remove(d)
	}
	for _, d := range s.added {
		s.st.Store().PruneFanout(d)
	}
	s.st.Sync()
	return len(s.added)
}
