package chunked

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"go.podman.io/storage/pkg/chunked/compressor"
)

// storageChunked compresses a tar to zstd:chunked with containers/storage's
// compressor, the one containers/image uses for --dest-compress-format
// zstd:chunked, and returns the blob with its layer annotations.
func storageChunked(tb testing.TB, tarBytes []byte) *testLayer {
	var blob bytes.Buffer
	meta := map[string]string{}
	level := 3 // its default, 10, takes seconds per MB here
	w, err := compressor.ZstdCompressor(&blob, meta, &level)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(tarBytes); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return &testLayer{tar: tarBytes, blob: blob.Bytes(), annotations: meta, diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(tarBytes))}
}

// pushBlob uploads a blob to the registry monolithically (POST, then PUT
// with the digest), without a manifest: the tests here read layers alone.
func pushBlob(tb testing.TB, reg *ocitest.Registry, repo string, blob []byte) string {
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	resp, err := http.Post("http://"+reg.Host+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		tb.Fatalf("upload start: %s", resp.Status)
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+d, bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		tb.Fatalf("upload: %s", resp.Status)
	}
	return d
}

// storeFromTar adds every regular file of a tar stream to the store, as
// applying a pulled layer does.
func storeFromTar(tb testing.TB, store memStore, r io.Reader) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatal(err)
			}
			store.add(b)
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil { // the diff_id check at EOF
		tb.Fatal(err)
	}
}

func pullLayer(tb testing.TB, reg *Registry, tl *testLayer, store memStore) (*Layer, []byte) {
	d := tl.desc()
	l, err := Prepare(context.Background(), reg.Blob(d.Digest), d, store, Options{TempDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	rc := l.Tar()
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		tb.Fatal(err)
	}
	return l, got
}

// TestRegistryBAfterA is the proof of partial pulls against a real registry:
// pull layer A (zstd:chunked, written by containers/storage's compressor)
// into an empty store, then layer B that shares 90% of A's files; B's bytes,
// counted from the registry's access log, are at most 15% of its blob, and
// both rebuilt tar streams are the layers' own (diff_id checked).
func TestRegistryBAfterA(t *testing.T) {
	reg := ocitest.StartRegistry(t)
	a := storageChunked(t, ocitest.GenTar(t, gentree.Tiny, false))
	b := storageChunked(t, ocitest.GenTar(t, gentree.Tiny, true))
	da := pushBlob(t, reg, "partial/a", a.blob)
	db := pushBlob(t, reg, "partial/b", b.blob)

	store := memStore{}
	la, gotA := pullLayer(t, &Registry{Host: reg.Host, Repository: "partial/a", Insecure: true}, a, store)
	if !bytes.Equal(gotA, a.tar) {
		t.Fatal("A: rebuilt tar differs")
	}
	sentA, _ := reg.BlobBytes(t, "partial/a", da)
	storeFromTar(t, store, bytes.NewReader(gotA))
	la.Close()

	lb, gotB := pullLayer(t, &Registry{Host: reg.Host, Repository: "partial/b", Insecure: true}, b, store)
	defer lb.Close()
	if !bytes.Equal(gotB, b.tar) {
		t.Fatal("B: rebuilt tar differs")
	}
	st := lb.Stats()
	sentB, reqs := reg.BlobBytes(t, "partial/b", db)
	t.Logf("A: blob %d bytes, registry sent %d (%.1f%%); B: blob %d bytes, registry sent %d (%.1f%%) in %d requests; B stats %+v",
		len(a.blob), sentA, 100*float64(sentA)/float64(len(a.blob)), len(b.blob), sentB, 100*float64(sentB)/float64(len(b.blob)), reqs, st)
	if sentB > int64(len(b.blob))*15/100 {
		t.Errorf("B fetched %d bytes, more than 15%% of its %d", sentB, len(b.blob))
	}
	if st.Fetched == 0 || st.Present == 0 || st.Present < 8*st.Fetched {
		t.Errorf("B stats %+v: want about 9 present for each fetched", st)
	}
}
