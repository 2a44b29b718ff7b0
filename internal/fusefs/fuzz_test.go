package fusefs

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"github.com/mossfs/mossfs/tree"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// exercise answers every kind of request the kernel sends for every node it
// can reach from the root (up to limit nodes), as the daemon would, without
// a mount. It returns the log.
func exercise(t testing.TB, src Source, objects string, limit int) string {
	var logs syncBuffer
	g := &generation{src: src, image: "fuzz", objects: objects, blocks: 1}
	f := newFileSystem(Options{Logger: log.New(&logs, "", 0)}, g)
	hdr := func(id uint64) *fuse.InHeader { return &fuse.InHeader{NodeId: id} }
	queue := []uint64{fuse.FUSE_ROOT_ID}
	seen := map[uint64]bool{}
	buf := make([]byte, 1<<16)
	for len(queue) > 0 && len(seen) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		var ao fuse.AttrOut
		if !f.GetAttr(nil, &fuse.GetAttrIn{InHeader: *hdr(id)}, &ao).Ok() {
			continue
		}
		f.ListXAttr(nil, hdr(id), buf)
		f.GetXAttr(nil, hdr(id), "user.foo", buf)
		f.GetXAttr(nil, hdr(id), "trusted.overlay.redirect", nil)
		switch ao.Mode & tree.TypeMask {
		case tree.TypeLink:
			f.Readlink(nil, hdr(id))
		case tree.TypeReg:
			var oo fuse.OpenOut
			if f.Open(nil, &fuse.OpenIn{InHeader: *hdr(id)}, &oo).Ok() {
				for _, off := range []uint64{0, 4096, ao.Size - 1, ao.Size + 10} {
					f.Read(nil, &fuse.ReadIn{InHeader: *hdr(id), Fh: oo.Fh, Offset: off, Size: 4096}, buf)
				}
				f.Release(nil, &fuse.ReleaseIn{InHeader: *hdr(id), Fh: oo.Fh})
			}
		case tree.TypeDir:
			var oo fuse.OpenOut
			if !f.OpenDir(nil, &fuse.OpenIn{InHeader: *hdr(id)}, &oo).Ok() {
				continue
			}
			f.ReadDir(nil, &fuse.ReadIn{InHeader: *hdr(id), Size: 4096}, fuse.NewDirEntryList(buf[:4096], 0))
			f.ReadDirPlus(nil, &fuse.ReadIn{InHeader: *hdr(id), Offset: 1, Size: 4096}, fuse.NewDirEntryList(buf[:4096], 1))
			gg, nid, st := f.node(id)
			if !st.Ok() {
				continue
			}
			ents, st := gg.readDir(f, nid)
			if !st.Ok() {
				continue
			}
			for _, e := range ents {
				var eo fuse.EntryOut
				if f.Lookup(nil, hdr(id), e.Name, &eo).Ok() && eo.NodeId != 0 {
					queue = append(queue, eo.NodeId)
				}
			}
			var eo fuse.EntryOut
			f.Lookup(nil, hdr(id), "no such name", &eo)
		}
	}
	var so fuse.StatfsOut
	f.StatFs(nil, hdr(1), &so)
	return logs.String()
}

func FuzzServe(f *testing.F) {
	golden, _ := filepath.Glob(testenv.SharedPath(f, "testdata", "composefs", "golden-images", "*.cfs"))
	for _, p := range golden {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	tx := overlaytest.Sample("fuzz")
	b, err := erofs.BuildImage(tx.Root, erofs.DefaultWriteOptions())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	objects := f.TempDir()
	tx.WriteObjects(f, objects)
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := erofs.Open(bytes.NewReader(data))
		if err != nil {
			return
		}
		if logs := exercise(t, ImageSource{Img: img}, objects, 2000); strings.Contains(logs, "internal error") {
			t.Fatalf("a request panicked:\n%s", logs)
		}
	})
}

// TestServeSample checks the harness itself: on a good image nothing is
// logged, so FuzzServe would notice what goes wrong.
func TestServeSample(t *testing.T) {
	tx := overlaytest.Sample("fuzz")
	objects := t.TempDir()
	tx.WriteObjects(t, objects)
	b, err := erofs.BuildImage(tx.Root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	img, err := erofs.Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if logs := exercise(t, ImageSource{Img: img}, objects, 1000); logs != "" {
		t.Fatalf("serving the sample logged:\n%s", logs)
	}
}
