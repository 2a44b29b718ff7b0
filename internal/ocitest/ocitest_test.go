package ocitest

import (
	"archive/tar"
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	reg.Settle(t)
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

// Ports the registry was to bind but another process took first (here
// servers that answer whatever is asked) are noticed, and others tried:
// the registry the test gets is the one it started.
func TestRegistryPortTaken(t *testing.T) {
	var taken []string
	for range 2 {
		impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer impostor.Close()
		taken = append(taken, strings.TrimPrefix(impostor.URL, "http://"))
	}
	pick := freeAddrs
	first := true
	freeAddrs = func(n int) ([]string, error) {
		if first {
			first = false
			return taken, nil
		}
		return pick(n)
	}
	defer func() { freeAddrs = pick }()
	reg := StartRegistry(t)
	if first {
		t.Fatal("StartRegistry did not pick its ports with freeAddrs")
	}
	if reg.Host == taken[0] {
		t.Fatalf("StartRegistry took the server on %s, which another process holds, for the registry", taken[0])
	}
	resp, err := http.Get("http://" + reg.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Docker-Distribution-Api-Version") == "" {
		t.Errorf("%s/v2/ answered %s without the registry's version header", reg.Host, resp.Status)
	}
}

// Settle returns only once every request the registry has begun to answer
// is in the access log: here a blob upload whose body the registry is
// still reading when Settle is called.
func TestSettleWaitsForRequests(t *testing.T) {
	reg := StartRegistry(t)
	resp, err := http.Post("http://"+reg.Host+"/v2/settle/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("starting an upload: %s, %v", resp.Status, err)
	}
	conn, err := net.Dial("tcp", reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := strings.Repeat("x", 100)
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s",
		loc.RequestURI(), reg.Host, len(body), body[:10])
	client := &http.Client{}
	for deadline := time.Now().Add(30 * time.Second); ; {
		n, err := reg.answering(client)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry answers %d requests, want the PATCH", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		reg.Settle(t)
	}()
	select {
	case <-settled:
		t.Fatal("Settle returned while the registry was reading a request's body")
	case <-time.After(300 * time.Millisecond):
	}
	fmt.Fprint(conn, body[10:])
	pr, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	<-settled
	var patches int
	for _, a := range reg.Accesses(t) {
		if a.Method == http.MethodPatch {
			patches++
		}
	}
	if patches != 1 || pr.StatusCode != http.StatusAccepted {
		t.Errorf("PATCH answered %s; %d PATCH lines in the access log after Settle, want 1", pr.Status, patches)
	}
}
