package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	imgspec "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/oci/layer"
	"github.com/mossfs/mossfs/tree"
)

// Config labels an export sets.
const (
	// LabelComposefs is the fs-verity digest of the composefs image of the
	// image's root filesystem (the composefs-rs/bootc convention).
	LabelComposefs = "containers.composefs.fsverity"
	// LabelUsr is the fs-verity digest of an exported OS transaction's own
	// /usr image.
	LabelUsr = "org.mossfs.usr.fsverity"
)

// ExportConfig is what an OS export puts in the image config.
type ExportConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	Arch       string // GOARCH spelling; "" = the host's
	OS         string // "" = linux
	Created    time.Time
	// CreatedBy is the history entry's created_by.
	CreatedBy string
}

// ExportLayer is one layer to write: a tree whose root is the image root.
type ExportLayer struct {
	Root *tree.Node
}

// ExportRequest is a whole export.
type ExportRequest struct {
	// Layers in order (an OS export has one).
	Layers []*tree.Node
	// Config of an OS export; ignored when BaseConfig is set.
	Config ExportConfig
	// BaseConfig is a container image's original config (JSON): exported as
	// itself, with only rootfs.diff_ids replaced by the rebuilt layers'.
	BaseConfig []byte
	// UsrDigest, if set, becomes the LabelUsr label (hex).
	UsrDigest string
	// Open reads payloads.
	Open ContentOpener
	// ContentSHA256 is the store's record of the sha256 of its objects'
	// contents, by fs-verity digest (state.ObjectSHA256s): zstd:chunked's
	// TOC names each file by it, and a file with a record is not hashed
	// for it. Files without one are hashed. May be nil.
	ContentSHA256 map[[32]byte][32]byte
	// Compression of the layers (CompressionZstdChunked if "").
	Compression string
	// Chunks is how zstd:chunked layers cut contents (ChunkFiles if "");
	// other compressions have no chunks and must leave it "".
	Chunks Chunking
	// Dest is a containers-transport reference (oci:DIR:TAG, docker://…).
	Dest string
	// Sys is the destination's system context (auth, TLS); may be nil.
	Sys *types.SystemContext
	// TempDir holds the staging layout ("" = os.TempDir()).
	TempDir string
	// Report, if set, receives c/image's progress lines.
	Report io.Writer
}

// ExportResult says what was written.
type ExportResult struct {
	Dest           string   `json:"dest"`
	ManifestDigest string   `json:"manifest_digest"`
	ConfigDigest   string   `json:"config_digest"`
	Layers         []string `json:"layers"`
	DiffIDs        []string `json:"diff_ids"`
	Composefs      string   `json:"composefs_fsverity"`
	// Image is the composefs image behind Composefs (not printed).
	Image   []byte   `json:"-"`
	Skipped []string `json:"skipped,omitempty"`
}

// hashStore is a layer.Store that only computes fs-verity digests: the
// composefs image of an export needs them, the contents are in the store.
type hashStore struct{}

func (hashStore) Put(r io.Reader) ([32]byte, error) { return fsverity.DigestReader(r) }

// toldStore is a layer.Store that is told each content's fs-verity digest
// by the layer writer (the store's record of the object it wrote) instead
// of hashing it again: the applier is handed the entries themselves
// (composefsOf.applyEntries), and each told digest is for the entry
// applied next.
type toldStore struct {
	d     [32]byte
	size  int64
	ok    bool // d is told for the entry being applied
	n     int  // digests taken
	drain [256 << 10]byte
}

func (s *toldStore) Put(io.Reader) ([32]byte, error) {
	return [32]byte{}, errors.New("content without its tar entry")
}

func (s *toldStore) PutEntry(h *tar.Header, r io.Reader) ([32]byte, error) {
	if !s.ok {
		return [32]byte{}, errors.New("the layer writer told no digest for this content")
	}
	s.ok = false
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, s.drain[:])
	if err != nil {
		return [32]byte{}, err
	}
	if n != s.size {
		return [32]byte{}, fmt.Errorf("told the digest of %d bytes, read %d", s.size, n)
	}
	s.n++
	return s.d, nil
}

// toldContent stands for a told content of n bytes: it reads as n bytes
// it never writes (toldStore discards them unseen).
type toldContent struct{ n int64 }

func (t *toldContent) Read(p []byte) (int, error) {
	if t.n == 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), t.n))
	t.n -= int64(k)
	return k, nil
}

// composefsOf applies layer tars as an import does (package layer, the
// same code as "image pull") and returns the composefs image of the
// result: the label is what a pull of these layers composes.
type composefsOf struct {
	ap   *layer.Applier
	told *toldStore // nil: the contents are hashed
}

// newComposefsOf hashes the contents it is given, or if told, takes their
// digests from told.tell.
func newComposefsOf(told bool) *composefsOf {
	c := &composefsOf{}
	var st layer.Store = hashStore{}
	if told {
		c.told = &toldStore{}
		st = c.told
	}
	c.ap = layer.NewApplier(st, layer.Limits{MaxLayerBytes: 1 << 62, Ratio: 1 << 62, MaxEntries: 1 << 40})
	return c
}

// apply consumes one layer's uncompressed tar stream.
func (c *composefsOf) apply(r io.Reader, name string) error {
	_, err := c.ap.Apply(r, name)
	return err
}

// applyEntries applies one layer as the layer writer feeds it, the
// digests of its larger contents told.
func (c *composefsOf) applyEntries(f *entryFeed, name string) error {
	l := c.ap.Layer(name, 0)
	for fj := range f.ch {
		for i, it := range fj.items {
			var body io.Reader = bytes.NewReader(nil)
			if i == len(fj.items)-1 {
				switch {
				case fj.told:
					c.told.d, c.told.size, c.told.ok = fj.verity, fj.size, true
					body = &toldContent{n: fj.size}
				case fj.content != nil:
					body = bytes.NewReader(fj.content)
				}
			}
			err := l.Entry(it.hdr, body)
			c.told.ok = false
			if err != nil {
				return err
			}
		}
	}
	l.End()
	return nil
}

func (c *composefsOf) image() ([]byte, [32]byte, error) {
	img, err := erofs.BuildImage(c.ap.Root, erofs.DefaultWriteOptions())
	if err != nil {
		return nil, [32]byte{}, err
	}
	return img, fsverity.Sum(img), nil
}

// Export writes the layers and config as an OCI image in a staging layout
// and copies it to req.Dest with containers/image, which converts what the
// destination needs (docker-archive: and containers-storage: rewrite the
// manifest; oci:, oci-archive: and docker:// keep it byte for byte).
func Export(ctx context.Context, req ExportRequest) (*ExportResult, error) {
	destRef, err := parseExportDest(req.Dest)
	if err != nil {
		return nil, fmt.Errorf("export destination %q: %w", req.Dest, err)
	}
	if len(req.Layers) == 0 {
		return nil, errors.New("export: no layers")
	}
	if c := req.Compression; req.Chunks != "" && c != "" && c != CompressionZstdChunked {
		return nil, fmt.Errorf("export: chunking %q is for zstd:chunked layers, not %s", req.Chunks, c)
	}
	chunks, err := ParseChunking(string(req.Chunks))
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	// An oci: destination is staged in its own directory, as
	// containers/image stages its blobs there: the layer blobs are then
	// hard-linked into its blobs (copy.Image finds them and copies nothing).
	ociDir := ""
	if destRef.Transport().Name() == "oci" {
		ociDir, _, _ = strings.Cut(destRef.StringWithinTransport(), ":")
	}
	tmp := req.TempDir
	if tmp == "" && ociDir != "" {
		if err := os.MkdirAll(ociDir, 0o755); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		tmp = ociDir
	}
	stage, unlock, err := makeStage(tmp)
	if err != nil {
		return nil, fmt.Errorf("export: staging: %w", err)
	}
	defer unlock()
	defer os.RemoveAll(stage)
	if ociDir != "" && tmp == ociDir {
		sweepStages(tmp) // what a killed export left in the layout
	}
	if err := os.MkdirAll(filepath.Join(stage, "blobs", "sha256"), 0o700); err != nil {
		return nil, fmt.Errorf("export: staging: %w", err)
	}

	res := &ExportResult{Dest: req.Dest}
	cfs := newComposefsOf(true)
	var descs []v1.Descriptor
	var diffIDs []digest.Digest
	for i, l := range req.Layers {
		lb, err := writeLayerBlob(stage, l, req.Compression, chunks, req.Open, req.ContentSHA256, cfs, fmt.Sprintf("%d", i+1), ociDir != "")
		if err != nil {
			return nil, fmt.Errorf("export: layer %d: %w", i+1, err)
		}
		descs = append(descs, v1.Descriptor{MediaType: lb.MediaType, Digest: sha(lb.Digest), Size: lb.Size, Annotations: lb.Annotations})
		diffIDs = append(diffIDs, sha(lb.DiffID))
		res.Skipped = append(res.Skipped, lb.Skipped...)
	}
	img, d, err := cfs.image()
	if err != nil {
		return nil, fmt.Errorf("export: composefs image: %w", err)
	}
	res.Image, res.Composefs = img, hex.EncodeToString(d[:])

	var config []byte
	if req.BaseConfig != nil {
		config, err = rebaseConfig(req.BaseConfig, diffIDs, res.Composefs)
	} else {
		config, err = osConfig(req.Config, diffIDs, res.Composefs, req.UsrDigest)
	}
	if err != nil {
		return nil, fmt.Errorf("export: config: %w", err)
	}
	configDesc, err := putBlob(stage, v1.MediaTypeImageConfig, config)
	if err != nil {
		return nil, err
	}
	man, err := json.Marshal(v1.Manifest{
		Versioned: imgspec.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    descs,
	})
	if err != nil {
		return nil, err
	}
	manDesc, err := putBlob(stage, v1.MediaTypeImageManifest, man)
	if err != nil {
		return nil, err
	}
	index, err := json.Marshal(v1.Index{Versioned: imgspec.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{manDesc}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, "index.json"), index, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, v1.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
		return nil, err
	}
	if ociDir != "" {
		linkBlobs(stage, ociDir, descs)
	}
	srcRef, err := layout.NewReference(stage, "")
	if err != nil {
		return nil, fmt.Errorf("export: staging layout: %w", err)
	}
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		return nil, err
	}
	defer policy.Destroy()
	archive, err := newArchiveDest(destRef, req.Sys)
	if err != nil {
		return nil, fmt.Errorf("export to %s: %w", req.Dest, err)
	}
	copied, err := copy.Image(ctx, policy, archive.ref, srcRef, &copy.Options{
		ReportWriter:   req.Report,
		SourceCtx:      &types.SystemContext{},
		DestinationCtx: archive.sys,
	})
	if err == nil {
		err = archive.commit(copied)
	}
	archive.cleanup()
	if err != nil {
		return nil, fmt.Errorf("export to %s: %w", req.Dest, err)
	}
	res.ManifestDigest = digest.FromBytes(copied).String()
	res.ConfigDigest = configDesc.Digest.String()
	for i := range descs {
		res.Layers = append(res.Layers, descs[i].Digest.String())
		res.DiffIDs = append(res.DiffIDs, diffIDs[i].String())
	}
	return res, nil
}

// Staging directories: an export holds an exclusive flock on its own
// while it runs. It locks the directory under a name sweepStages leaves
// alone (stageNewPrefix) and only then renames it to stagePrefix, so a
// stagePrefix directory nobody holds locked is one an export left when it
// was killed.
const (
	stagePrefix    = "moss-export-"
	stageNewPrefix = ".moss-export-new-"
)

// makeStage creates a locked staging directory in dir; unlock releases it
// (after its removal).
func makeStage(dir string) (stage string, unlock func(), err error) {
	if dir == "" {
		dir = os.TempDir()
	}
	tmp, err := os.MkdirTemp(dir, stageNewPrefix)
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		if err = unix.Flock(fd, unix.LOCK_EX); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", nil, &os.PathError{Op: "lock", Path: tmp, Err: err}
	}
	stage = filepath.Join(dir, stagePrefix+strings.TrimPrefix(filepath.Base(tmp), stageNewPrefix))
	if err := os.Rename(tmp, stage); err != nil {
		unix.Close(fd)
		os.Remove(tmp)
		return "", nil, err
	}
	var once sync.Once
	return stage, func() { once.Do(func() { unix.Close(fd) }) }, nil
}

// sweepStages removes the staging directories in dir that killed exports
// left (no export holds their lock), and those a killed export had not yet
// renamed (an hour old).
func sweepStages(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		switch {
		case strings.HasPrefix(name, stagePrefix):
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err != nil {
				continue
			}
			if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
				os.RemoveAll(path)
			}
			unix.Close(fd)
		case strings.HasPrefix(name, stageNewPrefix):
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(path)
			}
		}
	}
}

// linkBlobs hard-links the staged layer blobs into an OCI layout's blobs
// (readable by all, as containers/image writes them). Where that fails
// (another filesystem), copy.Image copies them.
func linkBlobs(stage, dir string, descs []v1.Descriptor) {
	dst := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	for _, d := range descs {
		src := filepath.Join(stage, "blobs", "sha256", d.Digest.Encoded())
		if os.Chmod(src, 0o644) == nil {
			os.Link(src, filepath.Join(dst, d.Digest.Encoded()))
		}
	}
}

func sha(d [32]byte) digest.Digest { return digest.NewDigestFromBytes(digest.SHA256, d[:]) }

// writeLayerBlob writes one layer into the staging layout's blobs; its
// uncompressed tar also goes through cfs, beside the compressor. With
// kept (an oci: layout, which keeps the blob) the blob is durable before
// it gets its name, as containers/image makes the blobs it writes there.
func writeLayerBlob(stage string, root *tree.Node, compression string, chunks Chunking, open ContentOpener, shas map[[32]byte][32]byte, cfs *composefsOf, name string, kept bool) (*LayerBlob, error) {
	f, err := os.CreateTemp(filepath.Join(stage, "blobs", "sha256"), ".layer-")
	if err != nil {
		return nil, err
	}
	var out io.Writer = f
	var wb *writeback
	if kept {
		wb = newWriteback(f)
		out = wb
	}
	feed := newEntryFeed()
	applied := make(chan error, 1)
	go func() {
		err := cfs.applyEntries(feed, name)
		if err != nil {
			feed.drain()
		}
		applied <- err
	}()
	lb, err := writeLayer(out, root, compression, open, layerHooks{entries: feed, shas: shas, chunking: chunks})
	feed.close()
	if aerr := <-applied; err == nil && aerr != nil {
		err = fmt.Errorf("composefs image of the layer: %w", aerr)
	}
	if err == nil && kept {
		err = wb.sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(stage, "blobs", "sha256", hex.EncodeToString(lb.Digest[:])))
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return lb, nil
}

func putBlob(stage, mediaType string, data []byte) (v1.Descriptor, error) {
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(stage, "blobs", "sha256", d.Encoded()), data, 0o600); err != nil {
		return v1.Descriptor{}, fmt.Errorf("export: staging: %w", err)
	}
	return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

// osConfig builds the config of an OS export.
func osConfig(c ExportConfig, diffIDs []digest.Digest, composefs, usr string) ([]byte, error) {
	arch := c.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	osName := c.OS
	if osName == "" {
		osName = "linux"
	}
	labels := maps.Clone(c.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelComposefs] = composefs
	if usr != "" {
		labels[LabelUsr] = usr
	}
	created := c.Created.UTC()
	cfg := v1.Image{
		Created:  &created,
		Platform: v1.Platform{Architecture: arch, OS: osName},
		Config: v1.ImageConfig{
			Entrypoint: c.Entrypoint,
			Cmd:        c.Cmd,
			Env:        slices.Clone(c.Env),
			Labels:     labels,
		},
		RootFS:  v1.RootFS{Type: "layers", DiffIDs: diffIDs},
		History: []v1.History{{Created: &created, CreatedBy: c.CreatedBy}},
	}
	return json.Marshal(cfg)
}

// rebaseConfig returns a container image's original config with the
// rebuilt layers' diff_ids and the composefs label of the result. The rest
// of the JSON is kept as it was (unknown fields included).
func rebaseConfig(orig []byte, diffIDs []digest.Digest, composefs string) ([]byte, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(orig, &raw); err != nil {
		return nil, fmt.Errorf("original config: %w", err)
	}
	if raw == nil {
		return nil, errors.New("original config: not a JSON object")
	}
	var rootfs map[string]json.RawMessage
	if r, ok := raw["rootfs"]; ok {
		if err := json.Unmarshal(r, &rootfs); err != nil {
			return nil, fmt.Errorf("original config rootfs: %w", err)
		}
	}
	if rootfs == nil {
		rootfs = map[string]json.RawMessage{"type": json.RawMessage(`"layers"`)}
	}
	ids, _ := json.Marshal(diffIDs)
	rootfs["diff_ids"] = ids
	raw["rootfs"], _ = json.Marshal(rootfs)
	var config map[string]json.RawMessage
	if c, ok := raw["config"]; ok && string(c) != "null" {
		if err := json.Unmarshal(c, &config); err != nil {
			return nil, fmt.Errorf("original config: %w", err)
		}
	}
	if config == nil {
		config = map[string]json.RawMessage{}
	}
	var labels map[string]string
	if l, ok := config["Labels"]; ok && string(l) != "null" {
		if err := json.Unmarshal(l, &labels); err != nil {
			return nil, fmt.Errorf("original config labels: %w", err)
		}
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelComposefs] = composefs
	config["Labels"], _ = json.Marshal(labels)
	raw["config"], _ = json.Marshal(config)
	return json.Marshal(raw)
}

// archiveDest is where copy.Image writes an export, so that what was
// there is either kept or replaced whole, once what replaces it is durable.
// containers/image writes archive files and an oci: layout's index.json in
// place, without a sync (and removes a docker archive whose write failed):
// a crash or a failure there lost the archive, or the index of every image
// in the layout.
//   - An oci-archive: or docker-archive: file is written to a temporary
//     file beside it, which commit makes durable and renames over it.
//   - An oci: layout's index.json and oci-layout file are written in a
//     directory of their own in the layout (with a copy of the index that
//     was there), its blobs into the layout's blobs
//     (OCISharedBlobDirPath); commit makes the new blobs durable, then the
//     index, and renames it over the layout's. The layout is locked
//     (flock) meanwhile, so two exports into it do not lose each other's
//     tag.
//
// Other destinations are written as they are.
type archiveDest struct {
	ref      types.ImageReference
	sys      *types.SystemContext // the destination's, for copy.Image
	tmp, dst string               // an archive file: the temporary file and its name

	// An oci: layout: its directory, the directory its index is written
	// in, and the lock held on the layout ("" and -1 otherwise).
	layout, index string
	lock          int
}

func newArchiveDest(ref types.ImageReference, sys *types.SystemContext) (*archiveDest, error) {
	name := ref.Transport().Name()
	if name == "oci" {
		return newLayoutDest(ref, sys)
	}
	if name != "oci-archive" && name != "docker-archive" {
		return &archiveDest{ref: ref, sys: sys, lock: -1}, nil
	}
	within := ref.StringWithinTransport()
	dst, rest, hasRest := strings.Cut(within, ":")
	if st, err := os.Stat(dst); dst == "" || err == nil && (!st.Mode().IsRegular() ||
		// containers/image refuses to add to a docker archive: let it say so.
		name == "docker-archive" && st.Size() > 0) {
		return &archiveDest{ref: ref, sys: sys, lock: -1}, nil // a pipe, a device: as it is
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".moss-export-")
	if err != nil {
		return nil, err
	}
	f.Close()
	tmpWithin := f.Name()
	if hasRest {
		tmpWithin += ":" + rest
	}
	tmpRef, err := ref.Transport().ParseReference(tmpWithin)
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return &archiveDest{ref: tmpRef, sys: sys, tmp: f.Name(), dst: dst, lock: -1}, nil
}

// newLayoutDest sets up the export to an oci: layout (archiveDest).
func newLayoutDest(ref types.ImageReference, sys *types.SystemContext) (a *archiveDest, err error) {
	dir, tag, hasTag := strings.Cut(ref.StringWithinTransport(), ":")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	a = &archiveDest{layout: dir, lock: -1}
	defer func() {
		if err != nil {
			a.cleanup()
		}
	}()
	if a.lock, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		a.lock = -1
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	if err := unix.Flock(a.lock, unix.LOCK_EX); err != nil {
		return nil, &os.PathError{Op: "lock", Path: dir, Err: err}
	}
	// Named as a staging directory not yet locked: sweepStages removes
	// one that a killed export left, once an hour old.
	if a.index, err = os.MkdirTemp(dir, stageNewPrefix); err != nil {
		return nil, err
	}
	old, err := os.ReadFile(filepath.Join(dir, v1.ImageIndexFile))
	switch {
	case err == nil:
		if err := os.WriteFile(filepath.Join(a.index, v1.ImageIndexFile), old, 0o644); err != nil {
			return nil, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	within := a.index
	if hasTag {
		within += ":" + tag
	}
	if a.ref, err = ref.Transport().ParseReference(within); err != nil {
		return nil, err
	}
	a.sys = &types.SystemContext{}
	if sys != nil {
		*a.sys = *sys
	}
	a.sys.OCISharedBlobDirPath = filepath.Join(dir, v1.ImageBlobsDir)
	return a, nil
}

// commit makes the written archive, or the layout's new blobs and index,
// durable and gives it its name; manifest is the image's manifest.
func (a *archiveDest) commit(manifest []byte) error {
	if a.index != "" {
		return a.commitLayout(manifest)
	}
	if a.tmp == "" {
		return nil
	}
	if err := syncFile(a.tmp); err != nil {
		return err
	}
	if err := os.Chmod(a.tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(a.tmp, a.dst); err != nil {
		return err
	}
	a.tmp = ""
	return durable.SyncDir(filepath.Dir(a.dst))
}

// commitLayout: containers/image synced the blobs it wrote but the
// manifest, and none of their names; once they are durable, the index and
// oci-layout files it wrote aside replace the layout's (durable.Write).
func (a *archiveDest) commitLayout(manifest []byte) error {
	blobs := filepath.Join(a.layout, v1.ImageBlobsDir, digest.Canonical.String())
	if err := syncFile(filepath.Join(blobs, digest.FromBytes(manifest).Encoded())); err != nil {
		return err
	}
	if err := durable.SyncDir(blobs); err != nil {
		return err
	}
	var files []durable.File
	for _, name := range []string{v1.ImageLayoutFile, v1.ImageIndexFile} {
		data, err := os.ReadFile(filepath.Join(a.index, name))
		if err != nil {
			return err
		}
		files = append(files, durable.File{Path: filepath.Join(a.layout, name), Data: data})
	}
	return durable.Write(files...)
}

// syncFile makes a file's data durable (fdatasync).
func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	err = unix.Fdatasync(int(f.Fd()))
	f.Close()
	if err != nil {
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	return nil
}

// cleanup removes what an export that did not commit wrote aside, and
// what a committed one no longer needs; it unlocks the layout.
func (a *archiveDest) cleanup() {
	if a.tmp != "" {
		os.Remove(a.tmp)
	}
	if a.index != "" {
		os.RemoveAll(a.index)
		a.index = ""
	}
	if a.lock >= 0 {
		unix.Close(a.lock)
		a.lock = -1
	}
}

// parseExportDest parses a containers-transport reference (TRANSPORT:REST,
// as podman and skopeo spell them) among the transports package oci links.
func parseExportDest(ref string) (types.ImageReference, error) {
	name, rest, ok := strings.Cut(ref, ":")
	if !ok {
		return nil, fmt.Errorf("%q: want TRANSPORT:REFERENCE (oci:DIR, docker://NAME, …)", ref)
	}
	tr := transports.Get(name)
	if tr == nil {
		return nil, fmt.Errorf("%q: unknown transport %q (oci, oci-archive, docker, docker-archive, containers-storage, dir)", ref, name)
	}
	return tr.ParseReference(rest)
}
