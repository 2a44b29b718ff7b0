package chunked

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// writeOCILayout writes a one-layer image (uncompressed layer) as an OCI
// layout with the tag "latest".
func writeOCILayout(t *testing.T, dir string, layer []byte) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int) {
		d := fmt.Sprintf("%x", sha256.Sum256(b))
		if err := os.WriteFile(filepath.Join(blobs, d), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + d, len(b)
	}
	ld, ls := put(layer)
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld}}})
	cd, cs := put(cfg)
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}}})
	md, ms := put(man)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json",
		"digest": md, "size": ms, "annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"}}}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// TestSkopeoZstdChunked reads a zstd:chunked layer written by Debian's
// skopeo (1.9.3, containers/image 5.23): the older variant, io.containers
// annotations and no tar-split. It is downloaded whole by default, and with
// AllowUnverified its files come out as skopeo put them in.
func TestSkopeoZstdChunked(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo not installed (scripts/install-deps.sh installs it)")
	}
	files := append(sampleFiles(), tfile{name: "./usr/unique", typ: tar.TypeReg, data: []byte(strconv.FormatInt(time.Now().UnixNano(), 10))})
	tb := makeTar(t, files)
	dir := t.TempDir()
	writeOCILayout(t, filepath.Join(dir, "src"), tb)
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	out, err := exec.Command(skopeo, "--policy", policy, "copy", "--dest-compress", "--dest-compress-format", "zstd:chunked",
		"oci:"+filepath.Join(dir, "src")+":latest", "oci:"+filepath.Join(dir, "dst")+":latest").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	var idx struct{ Manifests []struct{ Digest string } }
	readJSON(t, filepath.Join(dir, "dst", "index.json"), &idx)
	var man struct {
		Layers []struct {
			Digest      string
			Size        int64
			Annotations map[string]string
		}
	}
	readJSON(t, blobPath(dir, idx.Manifests[0].Digest), &man)
	ld := man.Layers[0]
	blob, err := os.ReadFile(blobPath(dir, ld.Digest))
	if err != nil {
		t.Fatal(err)
	}
	d := Descriptor{Digest: ld.Digest, Size: ld.Size, Annotations: ld.Annotations, DiffID: fmt.Sprintf("sha256:%x", sha256.Sum256(tb))}
	lay, err := LayoutOf(d.Annotations, d.Size)
	if err != nil || lay.Format != ZstdChunkedOld {
		t.Fatalf("skopeo's layer: format %v, err %v (annotations %v)", lay.Format, err, d.Annotations)
	}
	if _, err := Prepare(context.Background(), memBlob(blob), d, memStore{}, Options{TempDir: t.TempDir()}); !errors.Is(err, ErrFallback) {
		t.Fatalf("no tar-split and no AllowUnverified: %v, want ErrFallback", err)
	}
	store := memStore{}
	store.add(files[5].data)
	l, err := Prepare(context.Background(), memBlob(blob), d, store, Options{TempDir: t.TempDir(), AllowUnverified: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st := l.Stats(); st.Present != 1 || st.Fetched != st.Files-1 {
		t.Errorf("stats %+v: want one content present, the others fetched", st)
	}
	want := map[string][]byte{}
	for _, f := range files {
		if f.typ == tar.TypeReg && len(f.data) > 0 {
			want[f.name] = f.data
		}
	}
	rc := l.Tar()
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			b, _ := io.ReadAll(tr)
			if !bytes.Equal(b, want[h.Name]) {
				t.Errorf("%s: content differs", h.Name)
			}
			delete(want, h.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("files missing from the synthesized tar: %d", len(want))
	}
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "dst", "blobs", "sha256", digest[len("sha256:"):])
}

func readJSON(t *testing.T, path string, v any) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
