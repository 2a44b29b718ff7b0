package ocitest

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// Busybox is a layer with the static busybox as /bin/busybox and /bin/sh.
func busyboxLayer(t *testing.T) []byte {
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static: %v", err)
	}
	return Tar(t,
		Entry{Name: "bin/", Type: tar.TypeDir},
		Entry{Name: "bin/busybox", Mode: 0o755, Body: string(b)},
		Entry{Name: "bin/sh", Type: tar.TypeSymlink, Linkname: "busybox"},
	)
}

// The harness end to end: an image written as a layout, pushed by skopeo in
// zstd, pulled by podman from the loopback registry (the access log counts
// it), mounted, and run.
func TestHarness(t *testing.T) {
	testenv.RequireMountNS(t)
	reg := StartRegistry(t)
	c := NewContainers(t, Options{Registries: []string{reg.Host}})
	dir := filepath.Join(t.TempDir(), "layout")
	w := WriteLayout(t, dir, "one", Image{
		Layers: [][]byte{busyboxLayer(t), Tar(t, Entry{Name: "etc/", Type: tar.TypeDir}, Entry{Name: "etc/hello", Body: "hello\n"})},
		Gzip:   true, Cmd: []string{"/bin/sh"},
	})
	c.Skopeo(t, "copy", "--dest-compress-format", "zstd", "oci:"+dir+":one", reg.Ref("test/one:1"))
	man := c.Skopeo(t, "inspect", "--raw", reg.Ref("test/one:1"))
	if !strings.Contains(string(man), "tar+zstd") {
		t.Errorf("pushed manifest has no zstd layer: %s", man)
	}
	before := reg.Served(t)
	c.Podman(t, "pull", "-q", reg.Name("test/one:1"))
	reg.Settle()
	after := reg.Served(t)
	if after.BlobBytes-before.BlobBytes < 100_000 || after.BlobGETs-before.BlobGETs < 3 {
		t.Errorf("registry log shows %d blob bytes in %d GETs for podman's pull", after.BlobBytes-before.BlobBytes, after.BlobGETs-before.BlobGETs)
	}
	id := strings.TrimSpace(string(c.Podman(t, "image", "inspect", "--format", "{{.ID}}", reg.Name("test/one:1"))))
	if "sha256:"+id != w.ConfigDigest {
		t.Errorf("podman image ID %s, config digest %s", id, w.ConfigDigest)
	}
	mnt := strings.TrimSpace(string(c.Podman(t, "image", "mount", reg.Name("test/one:1"))))
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hello")); err != nil || string(b) != "hello\n" {
		t.Errorf("podman image mount: etc/hello = %q, %v", b, err)
	}
	out := c.Podman(t, "run", "--rm", "--pull=never", reg.Name("test/one:1"), "/bin/sh", "-c", "cat /etc/hello")
	if string(out) != "hello\n" {
		t.Errorf("podman run printed %q", out)
	}
}

func TestParseAccessLog(t *testing.T) {
	log := `time="x" level=warning msg="something"
127.0.0.1 - - [07/Dec/2026:02:00:00 +0000] "GET /v2/a/blobs/sha256:ab?x=1 HTTP/1.1" 206 1234 "" "skopeo"
127.0.0.1 - - [07/Dec/2026:02:00:01 +0000] "HEAD /v2/a/manifests/1 HTTP/1.1" 200 0 "" "podman"
`
	as, err := ParseAccessLog(strings.NewReader(log))
	if err != nil || len(as) != 2 {
		t.Fatalf("%v %+v", err, as)
	}
	if as[0] != (Access{Method: "GET", Path: "/v2/a/blobs/sha256:ab", Status: 206, Bytes: 1234}) || as[1].Method != "HEAD" {
		t.Errorf("%+v", as)
	}
}
