package ocitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Entry is one tar header of a test layer. Type defaults to a regular file
// (tar.TypeReg) with Body as content; whiteouts are plain entries named
// .wh.NAME or .wh..wh..opq.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Mode     int64
	UID, GID int
	Body     string
	Linkname string
	Xattrs   map[string]string // written as SCHILY.xattr PAX records
	Major    int64
	Minor    int64
	ModTime  time.Time // zero: 2024-01-01
}

// Tar builds an uncompressed tar stream from entries, in order.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Linkname, Devmajor: e.Major, Devminor: e.Minor,
			ModTime: e.ModTime, Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Image describes an image for WriteLayout.
type Image struct {
	Layers     [][]byte // uncompressed tar streams, bottom first
	Gzip       bool     // store layers gzip-compressed (else uncompressed tars)
	Cmd        []string // config Cmd
	Env        []string
	Entrypoint []string
	Labels     map[string]string
	OS, Arch   string // default linux, runtime.GOARCH
}

// Written says what WriteLayout wrote.
type Written struct {
	ManifestDigest string
	ConfigDigest   string // podman's image ID is its hex
	LayerDigests   []string
	DiffIDs        []string
}

// WriteLayout writes img as an OCI image layout in dir with the tag ref
// (dir may already hold other images: index.json gains an entry). Copy it
// elsewhere with skopeo ("oci:DIR:REF").
func WriteLayout(t testing.TB, dir, ref string, img Image) Written {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int64) {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", d[len("sha256:"):]), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d, int64(len(b))
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var w Written
	var layers []desc
	for _, l := range img.Layers {
		w.DiffIDs = append(w.DiffIDs, fmt.Sprintf("sha256:%x", sha256.Sum256(l)))
		mt := "application/vnd.oci.image.layer.v1.tar"
		blob := l
		if img.Gzip {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(l)
			zw.Close()
			blob = buf.Bytes()
			mt += "+gzip"
		}
		d, n := put(blob)
		w.LayerDigests = append(w.LayerDigests, d)
		layers = append(layers, desc{MediaType: mt, Digest: d, Size: n})
	}
	osName, arch := img.OS, img.Arch
	if osName == "" {
		osName = "linux"
	}
	if arch == "" {
		arch = runtime.GOARCH
	}
	cfg := map[string]any{
		"architecture": arch,
		"os":           osName,
		"created":      "2024-01-01T00:00:00Z",
		"config": map[string]any{
			"Cmd": img.Cmd, "Env": img.Env, "Entrypoint": img.Entrypoint, "Labels": img.Labels,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": w.DiffIDs},
	}
	cb, _ := json.Marshal(cfg)
	cd, cn := put(cb)
	w.ConfigDigest = cd
	man := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cd, Size: cn},
		"layers":        layers,
	}
	mb, _ := json.Marshal(man)
	md, mn := put(mb)
	w.ManifestDigest = md

	idxPath := filepath.Join(dir, "index.json")
	idx := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType,omitempty"`
		Manifests     []desc `json:"manifests"`
	}{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}
	if b, err := os.ReadFile(idxPath); err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatalf("%s: %v", idxPath, err)
		}
	}
	idx.Manifests = append(idx.Manifests, desc{
		MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: md, Size: mn,
		Annotations: map[string]string{"org.opencontainers.image.ref.name": ref},
	})
	ib, _ := json.Marshal(idx)
	if err := os.WriteFile(idxPath, ib, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}
