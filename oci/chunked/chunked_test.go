package chunked

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is a ContentSource over a map.
type memStore map[[32]byte][]byte

func (m memStore) HasSHA256(d [32]byte) bool { _, ok := m[d]; return ok }
func (m memStore) OpenSHA256(d [32]byte) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}
func (m memStore) add(b []byte) { m[sha256.Sum256(b)] = b }

// blobServer is a registry blob endpoint over http.ServeContent (which
// answers multi-range requests as multipart/byteranges), counting bytes sent.
type blobServer struct {
	blob         []byte
	digest       string
	refuseRanges bool  // serve the whole blob whatever the Range
	maxRanges    int   // 400 for more ranges than this (0: no limit)
	bearer       bool  // require a token from /token (user u, password p)
	sent         int64 // body bytes written
	requests     int64
}

func (s *blobServer) start(t *testing.T) (*httptest.Server, *Registry) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != "u" || p != "p" || r.URL.Query().Get("scope") != "repository:test/img:pull" {
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
			fmt.Fprint(w, `{"token":"tok"}`)
			return
		}
		if s.bearer && r.Header.Get("Authorization") != "Bearer tok" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test",scope="repository:test/img:pull"`, srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v2/test/img/blobs/"+s.digest {
			http.NotFound(w, r)
			return
		}
		atomic.AddInt64(&s.requests, 1)
		if s.refuseRanges {
			r.Header.Del("Range")
		}
		if s.maxRanges > 0 && strings.Count(r.Header.Get("Range"), ",")+1 > s.maxRanges {
			http.Error(w, "too many ranges", http.StatusBadRequest)
			return
		}
		http.ServeContent(countingWriter{w, &s.sent}, r, "", time.Time{}, bytes.NewReader(s.blob))
	}))
	t.Cleanup(srv.Close)
	reg := &Registry{Host: strings.TrimPrefix(srv.URL, "http://"), Repository: "test/img", Insecure: true}
	if s.bearer {
		reg.Username, reg.Password = "u", "p"
	}
	return srv, reg
}

type countingWriter struct {
	http.ResponseWriter
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	atomic.AddInt64(c.n, int64(len(p)))
	return c.ResponseWriter.Write(p)
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sampleFiles: 40 random files (a few chunked), dirs, a symlink, a hardlink,
// an xattr, an empty file and two files with the same content.
func sampleFiles() []tfile {
	fs := []tfile{{name: "./", typ: tar.TypeDir}, {name: "./usr/", typ: tar.TypeDir}}
	for i := range 40 {
		n := 1000 + i*1500
		fs = append(fs, tfile{name: fmt.Sprintf("./usr/f%02d", i), typ: tar.TypeReg, data: randBytes(uint64(i), n)})
	}
	fs = append(fs,
		tfile{name: "./usr/dup", typ: tar.TypeReg, data: randBytes(3, 1000+3*1500)},
		tfile{name: "./usr/empty", typ: tar.TypeReg},
		tfile{name: "./usr/cap", typ: tar.TypeReg, data: []byte("x"), xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02"}},
		tfile{name: "./usr/link", typ: tar.TypeSymlink, link: "f01"},
		tfile{name: "./usr/hard", typ: tar.TypeLink, link: "./usr/f02"},
	)
	return fs
}

func readAllTar(t *testing.T, l *Layer) ([]byte, error) {
	t.Helper()
	rc := l.Tar()
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestPartialPullFetchesOnlyMissing(t *testing.T) {
	files := sampleFiles()
	tl := writeChunked(t, files)
	d := tl.desc()
	store := memStore{}
	for i, f := range files {
		if f.typ == tar.TypeReg && len(f.data) > 0 && i%10 != 0 { // the store lacks every tenth
			store.add(f.data)
		}
	}
	srv := &blobServer{blob: tl.blob, digest: d.Digest}
	_, reg := srv.start(t)
	l, err := Prepare(context.Background(), reg.Blob(d.Digest), d, store, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := l.Stats()
	if st.Files != 41 || st.Fetched != 4 || st.Present != 37 {
		t.Errorf("stats %+v: want 41 distinct contents, 4 fetched, 37 present", st)
	}
	// The server's count, not ours: metadata plus the four missing files.
	if srv.sent >= int64(len(tl.blob))/5 {
		t.Errorf("server sent %d of %d blob bytes", srv.sent, len(tl.blob))
	}
	if srv.sent < st.FetchedBytes {
		t.Errorf("server sent %d bytes, fewer than the %d fetched", srv.sent, st.FetchedBytes)
	}
	got, err := readAllTar(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, tl.tar) {
		t.Fatalf("rebuilt tar differs from the original (%d vs %d bytes)", len(got), len(tl.tar))
	}
	t.Logf("blob %d bytes; server sent %d (%.1f%%) in %d requests; stats %+v", len(tl.blob), srv.sent, 100*float64(srv.sent)/float64(len(tl.blob)), srv.requests, st)
}

func TestPartialPullEmptyStoreAndBearer(t *testing.T) {
	tl := writeChunked(t, sampleFiles())
	d := tl.desc()
	srv := &blobServer{blob: tl.blob, digest: d.Digest, bearer: true, maxRanges: 3}
	_, reg := srv.start(t)
	var progress int64
	d.DiffID = "" // the caller checks the stream itself
	l, err := Prepare(context.Background(), reg.Blob(d.Digest), d, memStore{}, Options{TempDir: t.TempDir(), Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := l.Stats()
	if st.Fetched != 41 || st.Present != 0 || st.Requests < 3 {
		t.Errorf("stats %+v: want 41 fetched in several requests (the server takes at most 3 ranges)", st)
	}
	if progress != st.MetadataBytes+st.FetchedBytes {
		t.Errorf("progress reported %d bytes, stats say %d", progress, st.MetadataBytes+st.FetchedBytes)
	}
	got, err := readAllTar(t, l)
	if err != nil || !bytes.Equal(got, tl.tar) {
		t.Fatalf("rebuilt tar: err %v, equal %v", err, bytes.Equal(got, tl.tar))
	}
}

func TestPartialPullFallsBack(t *testing.T) {
	tl := writeChunked(t, sampleFiles())
	d := tl.desc()
	srv := &blobServer{blob: tl.blob, digest: d.Digest, refuseRanges: true}
	_, reg := srv.start(t)
	_, err := Prepare(context.Background(), reg.Blob(d.Digest), d, memStore{}, Options{TempDir: t.TempDir()})
	if !errors.Is(err, ErrFallback) || !errors.Is(err, ErrRangesRefused) {
		t.Fatalf("registry without ranges: %v, want ErrFallback", err)
	}
	// A TOC of a version this reader does not know (its digest right).
	v2 := *tl
	v2.toc.Version = 2
	v2l := rewrap(t, &v2)
	if _, err := Prepare(context.Background(), memBlob(v2l.blob), v2l.desc(), memStore{}, Options{TempDir: t.TempDir()}); !errors.Is(err, ErrFallback) || !errors.Is(err, ErrTOCVersion) {
		t.Fatalf("TOC version 2: %v, want ErrFallback", err)
	}
	d.Annotations = nil
	if _, err := Prepare(context.Background(), reg.Blob(d.Digest), d, memStore{}, Options{}); !errors.Is(err, ErrFallback) {
		t.Fatalf("layer without TOC: %v, want ErrFallback", err)
	}
	d.Annotations = map[string]string{AnnotationEstargzTOCDigest: "sha256:" + strings.Repeat("0", 64)}
	if _, err := Prepare(context.Background(), reg.Blob(d.Digest), d, memStore{}, Options{}); !errors.Is(err, ErrFallback) {
		t.Fatalf("eStargz without the unsafe option: %v, want ErrFallback", err)
	}
}

// TestPartialPullRefusesLies: a TOC that disagrees with its digest, with the
// layer's contents, or a diff_id that disagrees with the rebuilt stream, is
// refused (not a fallback).
func TestPartialPullRefusesLies(t *testing.T) {
	files := sampleFiles()
	run := func(name string, tl *testLayer, mutate func(*Descriptor), store memStore, wantErr string) {
		t.Run(name, func(t *testing.T) {
			d := tl.desc()
			if mutate != nil {
				mutate(&d)
			}
			srv := &blobServer{blob: tl.blob, digest: d.Digest}
			_, reg := srv.start(t)
			tmp := t.TempDir()
			l, err := Prepare(context.Background(), reg.Blob(d.Digest), d, store, Options{TempDir: tmp})
			if err == nil {
				_, err = readAllTar(t, l)
				l.Close()
			}
			if err == nil || errors.Is(err, ErrFallback) || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("err %v, want a refusal containing %q", err, wantErr)
			}
			if ents, _ := readDirNames(tmp); len(ents) != 0 {
				t.Errorf("staging left behind: %v", ents)
			}
		})
	}
	good := writeChunked(t, files)
	run("toc digest", good, func(d *Descriptor) {
		d.Annotations = clone(d.Annotations)
		d.Annotations[AnnotationTOCChecksum] = "sha256:" + strings.Repeat("1", 64)
	}, memStore{}, "does not match the digest in the manifest")
	run("diff_id", good, func(d *Descriptor) { d.DiffID = "sha256:" + strings.Repeat("2", 64) }, memStore{}, "diff_id")

	// A store whose content differs from what its sha256 name says: caught
	// by the tar-split's crc64 and the diff_id.
	bad := memStore{}
	for _, f := range files {
		if f.typ == tar.TypeReg && len(f.data) > 0 {
			bad[sha256.Sum256(f.data)] = append(bytes.Clone(f.data[1:]), 'z')
		}
	}
	run("store lies", good, nil, bad, "checksum failed")

	// A TOC (with a correct annotation) that gives a file a wrong digest.
	lie := *good
	lie.toc.Entries = append([]Entry(nil), good.toc.Entries...)
	for i := range lie.toc.Entries {
		if lie.toc.Entries[i].Name == "./usr/f05" {
			lie.toc.Entries[i].Digest = fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("other")))
		}
	}
	run("file digest", rewrap(t, &lie), nil, memStore{}, "does not match its digest")

	// A TOC whose file size disagrees with the tar-split.
	lie2 := *good
	lie2.toc.Entries = append([]Entry(nil), good.toc.Entries...)
	for i := range lie2.toc.Entries {
		if lie2.toc.Entries[i].Name == "./usr/f07" {
			lie2.toc.Entries[i].Size++
		}
	}
	run("file size", rewrap(t, &lie2), nil, memStore{}, "in the tar-split")

	// A TOC that points a file beyond the content.
	lie3 := *good
	lie3.toc.Entries = append([]Entry(nil), good.toc.Entries...)
	for i := range lie3.toc.Entries {
		if lie3.toc.Entries[i].Name == "./usr/f09" {
			lie3.toc.Entries[i].EndOffset = int64(len(good.blob)) + 10
		}
	}
	run("range", rewrap(t, &lie3), nil, memStore{}, "outside the blob's content")
}

// rewrap rebuilds a test layer's metadata around its (changed) TOC.
func rewrap(t *testing.T, tl *testLayer) *testLayer {
	d := tl.desc()
	lay, err := LayoutOf(d.Annotations, d.Size)
	if err != nil {
		t.Fatal(err)
	}
	content := tl.blob[:lay.TOC.Offset-skippableHeader]
	tsZ := tl.blob[lay.TarSplit.Offset : lay.TarSplit.Offset+lay.TarSplit.Length]
	return finishChunked(t, tl.tar, bytes.Clone(content), tl.toc, int(lay.TarSplit.Uncompressed), tsZ)
}

func clone(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestMergeRanges(t *testing.T) {
	in := []Range{{100, 10}, {0, 10}, {10, 5}, {50, 1}, {200, 1}, {105, 20}}
	got := MergeRanges(in, 100)
	want := []Range{{0, 15}, {50, 1}, {100, 25}, {200, 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merge: %v, want %v", got, want)
	}
	got = MergeRanges(in, 2) // gaps 35, 49, 75: join the 35 and 49 ones
	want = []Range{{0, 125}, {200, 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merge to 2: %v, want %v", got, want)
	}
	if got := MergeRanges(in, 1); fmt.Sprint(got) != fmt.Sprint([]Range{{0, 201}}) {
		t.Fatalf("merge to 1: %v", got)
	}
}

func TestParseTOCRefuses(t *testing.T) {
	dig := "sha256:" + strings.Repeat("a", 64)
	cases := map[string]string{
		"dotdot":      `{"version":1,"entries":[{"type":"reg","name":"a/../../x"}]}`,
		"absolute":    `{"version":1,"entries":[{"type":"dir","name":"/etc"}]}`,
		"type":        `{"version":1,"entries":[{"type":"sock","name":"x"}]}`,
		"version":     `{"version":7,"entries":[]}`,
		"offset":      `{"version":1,"entries":[{"type":"reg","name":"x","size":5,"digest":"` + dig + `","offset":90,"endOffset":101}]}`,
		"digest":      `{"version":1,"entries":[{"type":"reg","name":"x","size":5,"digest":"md5:00","offset":1,"endOffset":10}]}`,
		"chunk gap":   `{"version":1,"entries":[{"type":"reg","name":"x","size":10,"digest":"` + dig + `","offset":1,"endOffset":50,"chunkSize":4},{"type":"chunk","name":"x","offset":20,"chunkOffset":5,"chunkSize":5}]}`,
		"chunk short": `{"version":1,"entries":[{"type":"reg","name":"x","size":10,"digest":"` + dig + `","offset":1,"endOffset":50,"chunkSize":4}]}`,
		"orphan":      `{"version":1,"entries":[{"type":"chunk","name":"x","offset":2,"chunkSize":5}]}`,
		"hardlink":    `{"version":1,"entries":[{"type":"hardlink","name":"x","linkName":"../../etc/shadow"}]}`,
		"xattr":       `{"version":1,"entries":[{"type":"dir","name":"x","xattrs":{"user.a":"!!"}}]}`,
		"mode":        `{"version":1,"entries":[{"type":"dir","name":"x","mode":-1}]}`,
	}
	for name, js := range cases {
		if _, err := ParseTOC([]byte(js), Limits{ContentEnd: 100}); err == nil {
			t.Errorf("%s: accepted %s", name, js)
		}
	}
	ok := `{"version":1,"entries":[{"type":"reg","name":"./x","size":10,"digest":"` + dig + `","offset":1,"endOffset":50,"chunkSize":4},{"type":"chunk","name":"x","offset":20,"chunkOffset":4,"chunkSize":6}]}`
	if _, err := ParseTOC([]byte(ok), Limits{ContentEnd: 100}); err != nil {
		t.Errorf("valid TOC refused: %v", err)
	}
}

func readDirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}
