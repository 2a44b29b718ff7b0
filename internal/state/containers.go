package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/tree"
)

// Container images are kept apart from the OS transactions: their root is a
// container's root filesystem, not /usr, they have no numeric id and no
// .stateID, and switch, rollback, bls and active do not take them. gc and
// mount records count them as roots.
//
//	containers/<config hex>.json      the record (ContainerImage)
//	containers/<config hex>/          config.json, manifest.json and one
//	                                  fragment (composefs dump) per layer,
//	                                  layer-<n>.dump, as the layer spells
//	                                  itself: enough to export it again
//
// Identity is the config digest (podman's image ID). The record exists
// exactly when its .json does: its directory, image and objects are durable
// before it is written.

// ContainerLayer is one layer of a container image.
type ContainerLayer struct {
	Digest    string `json:"digest"`     // the blob's digest, as the manifest says
	DiffID    string `json:"diff_id"`    // sha256 of the uncompressed tar
	MediaType string `json:"media_type"` // as the manifest says
	Size      int64  `json:"size"`       // compressed size
	Fragment  string `json:"fragment"`   // file in the image's directory
}

// ContainerImage is the record of a pulled container image.
type ContainerImage struct {
	ConfigDigest   string           `json:"config_digest"`   // sha256:…, the image ID
	ManifestDigest string           `json:"manifest_digest"` // of the (platform) manifest
	Image          string           `json:"image"`           // hex fs-verity digest of its EROFS image in images/
	Names          []string         `json:"names"`
	Source         string           `json:"source"` // the reference pulled
	Platform       string           `json:"platform,omitempty"`
	Time           time.Time        `json:"time"`
	Layers         []ContainerLayer `json:"layers"`
	Counts         Counts           `json:"counts"`
}

// ID is the config digest's hex.
func (c *ContainerImage) ID() string { return strings.TrimPrefix(c.ConfigDigest, "sha256:") }

// ContainersDir holds the container image records.
func (s *State) ContainersDir() string { return filepath.Join(s.root, "containers") }

// ContainerDir is the directory of an image's config, manifest and fragments.
func (s *State) ContainerDir(c *ContainerImage) string {
	return filepath.Join(s.ContainersDir(), c.ID())
}

// ErrNoContainer is wrapped for a name or id no record has.
var ErrNoContainer = errors.New("no such container image")

// Containers lists the records, by time.
func (s *State) Containers() ([]*ContainerImage, error) {
	ents, err := os.ReadDir(s.ContainersDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("container images: %w", err)
	}
	var out []*ContainerImage
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || len(hex) != 64 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(s.ContainersDir(), e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("container image: %w", err)
		}
		var c ContainerImage
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("container image %s: %w", p, err)
		}
		if c.ID() != hex || len(c.Image) != 64 {
			return nil, fmt.Errorf("container image %s: record names config %s and image %q", p, c.ConfigDigest, c.Image)
		}
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *ContainerImage) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// FindContainer finds an image by name (also with ":latest" added), by
// config digest ("sha256:…" or hex) or by a unique id prefix of at least 12
// hex digits.
func (s *State) FindContainer(ref string) (*ContainerImage, error) {
	all, err := s.Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range all {
		if slices.Contains(c.Names, ref) || slices.Contains(c.Names, ref+":latest") {
			return c, nil
		}
	}
	id := strings.TrimPrefix(ref, "sha256:")
	var found *ContainerImage
	if len(id) >= 12 {
		for _, c := range all {
			if strings.HasPrefix(c.ID(), id) {
				if found != nil {
					return nil, fmt.Errorf("container image id %s is ambiguous", ref)
				}
				found = c
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoContainer, ref)
	}
	return found, nil
}

// ContainerAdd is what AddContainer stores.
type ContainerAdd struct {
	Record   ContainerImage // Image, Layers[].Fragment and Time are filled in
	Config   []byte
	Manifest []byte
	Root     *tree.Node   // the merged tree
	Layers   []*tree.Node // each layer's own tree
}

// AddContainer writes an image's EROFS image, directory and record; its
// objects must be in the store (not yet synced is fine: one syncfs makes
// them, the image and the directory durable before the record appears).
// An image already recorded keeps its record and gains the names. Names
// move from any other record to this one, as podman's tags do.
func (s *State) AddContainer(add ContainerAdd) (*ContainerImage, error) {
	rec := add.Record
	if err := s.checkObjects(add.Root); err != nil {
		return nil, fmt.Errorf("container image: %w", err)
	}
	dir, err := s.PrivateDir("containers")
	if err != nil {
		return nil, err
	}
	img, err := erofs.BuildImage(add.Root, erofs.DefaultWriteOptions())
	if err != nil {
		return nil, fmt.Errorf("container image: building its EROFS image: %w", err)
	}
	if rec.Image, err = s.writeImage(img, false); err != nil {
		return nil, fmt.Errorf("container image: %w", err)
	}
	rec.Counts = CountTree(add.Root)
	rec.Counts.Image = int64(len(img))
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	// The directory: written under a temporary name, renamed into place.
	final := filepath.Join(dir, rec.ID())
	if _, err := os.Stat(final); err != nil {
		tmp, err := os.MkdirTemp(dir, ".tmp-")
		if err != nil {
			return nil, fmt.Errorf("container image: %w", err)
		}
		defer os.RemoveAll(tmp)
		if err := os.Chmod(tmp, PrivateDirMode); err != nil {
			return nil, err
		}
		files := map[string][]byte{"config.json": add.Config, "manifest.json": add.Manifest}
		for i, l := range add.Layers {
			data, err := EncodeFragment(l)
			if err != nil {
				return nil, fmt.Errorf("container image: layer %d: %w", i, err)
			}
			files[fmt.Sprintf("layer-%d.dump", i)] = data
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(tmp, name), data, PrivateFileMode); err != nil {
				return nil, fmt.Errorf("container image: %w", err)
			}
		}
		if err := os.Rename(tmp, final); err != nil {
			return nil, fmt.Errorf("container image: %w", err)
		}
	}
	for i := range rec.Layers {
		rec.Layers[i].Fragment = fmt.Sprintf("layer-%d.dump", i)
	}
	if err := s.Sync(); err != nil {
		return nil, fmt.Errorf("container image: %w", err)
	}
	lk, err := s.txLock()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	return &rec, s.recordNames(&rec)
}

// NameContainer adds a name to a recorded image (moving it from another).
func (s *State) NameContainer(c *ContainerImage, name string) (*ContainerImage, error) {
	lk, err := s.txLock()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	rec := *c
	rec.Names = append(slices.Clone(c.Names), name)
	return &rec, s.recordNames(&rec)
}

// recordNames writes rec, keeping the names of an existing record of the
// same image and taking rec's names from every other record. The caller
// holds the txLock.
func (s *State) recordNames(rec *ContainerImage) error {
	all, err := s.Containers()
	if err != nil {
		return err
	}
	for _, c := range all {
		if c.ID() == rec.ID() {
			for _, n := range c.Names {
				if !slices.Contains(rec.Names, n) {
					rec.Names = append(rec.Names, n)
				}
			}
			rec.Time = c.Time
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(c.Names), func(n string) bool { return slices.Contains(rec.Names, n) })
		if len(kept) != len(c.Names) {
			c.Names = kept
			if err := s.writeContainerRecord(c); err != nil {
				return err
			}
		}
	}
	slices.Sort(rec.Names)
	return s.writeContainerRecord(rec)
}

func (s *State) writeContainerRecord(c *ContainerImage) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.ContainersDir(), c.ID()+".json"), append(b, '\n'), PrivateFileMode, true)
}

// RemoveContainer removes an image's record and directory (gc then removes
// its EROFS image and the objects nothing else uses). A mounted image's
// record goes too; its mount record keeps the image and objects until it
// is unmounted.
func (s *State) RemoveContainer(ref string) (*ContainerImage, error) {
	lk, err := s.txLock()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	c, err := s.FindContainer(ref)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(s.ContainersDir(), c.ID()+".json")); err != nil {
		return nil, fmt.Errorf("removing container image: %w", err)
	}
	if err := fsyncDir(s.ContainersDir()); err != nil {
		return nil, err
	}
	os.RemoveAll(s.ContainerDir(c))
	return c, nil
}

// containerRoots lists the images of the container records, and sweeps the
// directories no record owns (and temporary ones).
func (s *State) containerRoots(dryRun bool) ([]string, error) {
	all, err := s.Containers()
	if err != nil {
		return nil, err
	}
	var images []string
	ids := map[string]bool{}
	for _, c := range all {
		images = append(images, c.Image)
		ids[c.ID()] = true
	}
	ents, _ := os.ReadDir(s.ContainersDir())
	for _, e := range ents {
		if e.IsDir() && !ids[e.Name()] && !dryRun {
			os.RemoveAll(filepath.Join(s.ContainersDir(), e.Name()))
		}
	}
	return images, nil
}

// NotATransaction is the error of commands that take OS transactions
// (switch, rollback, bls, active) given something else: it says when arg
// names a container image, which they refuse.
func (s *State) NotATransaction(cmd, arg string) error {
	if c := s.containerByAnyDigest(arg); c != nil {
		return fmt.Errorf("%s: %q is a container image (%s), not an OS transaction: %s takes transaction ids; mount a container image with mossfs mount --image", cmd, arg, c.ConfigDigest, cmd)
	}
	return fmt.Errorf("%s: %q is not a transaction id", cmd, arg)
}

// containerByAnyDigest finds the container image arg names the way
// FindContainer does (name, config digest or its prefix), or by its manifest
// digest or its EROFS image digest (with or without "sha256:"): whatever a
// user may have copied from image inspect. Nil when none matches.
func (s *State) containerByAnyDigest(arg string) *ContainerImage {
	if c, err := s.FindContainer(arg); err == nil {
		return c
	}
	all, err := s.Containers()
	if err != nil {
		return nil
	}
	bare := strings.TrimPrefix(arg, "sha256:")
	if bare == "" {
		return nil
	}
	for _, c := range all {
		if c.ManifestDigest == "sha256:"+bare || c.Image == bare {
			return c
		}
	}
	return nil
}
