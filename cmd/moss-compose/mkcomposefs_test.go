package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
)

// mkcomposefsBin returns a link named mkcomposefs to the built
// moss-compose, so that the tests run it the way containers/storage does.
func mkcomposefsBin(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), "mkcomposefs")
	if err := os.Symlink(mossCompose(t), link); err != nil {
		t.Fatal(err)
	}
	return link
}

type mkcomposefsAsset struct {
	name, path string
	sha256     string
	digest     string // image fs-verity digest, from GENERATED-expected.tsv
	version    string // "" or "0"/"1"
}

func mkcomposefsAssets(t *testing.T) (positive []mkcomposefsAsset, negative []string) {
	dir := testenv.SharedPath(t, "testdata", "composefs")
	digests := map[string]string{}
	tsv, err := os.Open(filepath.Join(dir, "GENERATED-expected.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer tsv.Close()
	sc := bufio.NewScanner(tsv)
	for sc.Scan() {
		if f := strings.Split(sc.Text(), "\t"); len(f) >= 4 && !strings.HasPrefix(f[0], "#") {
			digests[f[0]] = f[3]
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".dump") && !strings.HasSuffix(name, ".dump.gz") {
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasPrefix(name, "should-fail-") {
			negative = append(negative, p)
			continue
		}
		sum, err := os.ReadFile(p + ".sha256")
		if err != nil {
			continue
		}
		a := mkcomposefsAsset{name: name, path: p, sha256: strings.Fields(string(sum))[0], digest: digests[name]}
		if v, err := os.ReadFile(p + ".version"); err == nil {
			a.version = strings.TrimSpace(string(v))
		}
		positive = append(positive, a)
	}
	if len(positive) < 13 || len(negative) < 14 {
		t.Fatalf("%d positive and %d negative assets in %s", len(positive), len(negative), dir)
	}
	return positive, negative
}

func (a mkcomposefsAsset) args() []string {
	if a.version == "" {
		return nil
	}
	return []string{"--min-version=" + a.version, "--max-version=" + a.version}
}

func (a mkcomposefsAsset) dump(t *testing.T) []byte {
	data, err := os.ReadFile(a.path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(a.name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestMkcomposefsAssets runs the binary on every positive asset, from a
// file into a file (with --print-digest) and through pipes (--from-file - -,
// as containers/storage does), and compares with mkcomposefs 1.0.8's images.
func TestMkcomposefsAssets(t *testing.T) {
	bin := mkcomposefsBin(t)
	positive, _ := mkcomposefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			dump := a.dump(t)
			src := filepath.Join(t.TempDir(), "in.dump")
			if err := os.WriteFile(src, dump, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out.cfs")
			cmd := exec.Command(bin, append(a.args(), "--print-digest", "--from-file", src, out)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
			}
			img, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256Hex(img); got != a.sha256 {
				t.Errorf("image file sha256 %s, want %s", got, a.sha256)
			}
			if got := strings.TrimSpace(stdout.String()); a.digest != "" && got != a.digest {
				t.Errorf("--print-digest %q, want %s", got, a.digest)
			}
			if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
				t.Errorf("%d files next to the image, want only the image (temporary file left?)", len(ents))
			}

			cmd = exec.Command(bin, append(a.args(), "--from-file", "-", "-")...)
			cmd.Stdin = bytes.NewReader(dump)
			stdout.Reset()
			stderr.Reset()
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
			}
			if got := sha256Hex(stdout.Bytes()); got != a.sha256 {
				t.Errorf("piped image sha256 %s, want %s", got, a.sha256)
			}
		})
	}
}

// TestMkcomposefsRejects: every should-fail asset exits non-zero with a
// message naming the file and line, and leaves an existing image alone.
func TestMkcomposefsRejects(t *testing.T) {
	bin := mkcomposefsBin(t)
	_, negative := mkcomposefsAssets(t)
	out := filepath.Join(t.TempDir(), "out.cfs")
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range negative {
		cmd := exec.Command(bin, "--from-file", p, out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil {
			t.Errorf("%s: accepted", filepath.Base(p))
			continue
		}
		if msg := stderr.String(); !strings.Contains(msg, p+":") {
			t.Errorf("%s: message %q does not name the file and line", filepath.Base(p), msg)
		}
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("a failed run replaced the existing image")
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Errorf("%d files in the output directory, want 1", len(ents))
	}
}

func TestMkcomposefsOptions(t *testing.T) {
	bin := mkcomposefsBin(t)
	dir := t.TempDir()
	dump := filepath.Join(dir, "w.dump")
	// A user whiteout: version 1 when allowed.
	if err := os.WriteFile(dump, []byte("/ 4096 40755 2 0 0 0 0.0\n/w 0 20000 1 0 0 0 0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args    []string
		version byte
		fails   bool
	}{
		{nil, 1, false},
		{[]string{"--max-version=0"}, 0, false},
		{[]string{"--min-version=0"}, 0, false},
		{[]string{"--min-version=1"}, 1, false},
		{[]string{"--min-version=1", "--max-version=0"}, 1, false},
		{[]string{"--max-version=2"}, 0, true},
		{[]string{"--min-version=-1"}, 0, true},
	} {
		cmd := exec.Command(bin, append(c.args, "--from-file", dump, "-")...)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		err := cmd.Run()
		if (err != nil) != c.fails {
			t.Errorf("%v: error %v", c.args, err)
			continue
		}
		if !c.fails && (stdout.Len() < 16 || stdout.Bytes()[12] != c.version) {
			t.Errorf("%v: image version %v, want %d", c.args, stdout.Bytes()[12:13], c.version)
		}
	}
	// --print-digest-only writes no image and needs no IMAGE argument.
	out, err := exec.Command(bin, "--print-digest-only", "--from-file", dump).Output()
	if err != nil || len(strings.TrimSpace(string(out))) != 64 {
		t.Errorf("--print-digest-only: %q, %v", out, err)
	}
	if _, err := exec.Command(bin, "--from-file", dump).Output(); err == nil {
		t.Errorf("no IMAGE: accepted")
	}
}

// TestMkcomposefsDirectory builds an image from a directory with a digest
// store: the objects land in the store, and the image names them.
func TestMkcomposefsDirectory(t *testing.T) {
	bin := mkcomposefsBin(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	if err := os.WriteFile(filepath.Join(src, "d", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "small"), []byte("hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/big", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "objects")
	out := filepath.Join(t.TempDir(), "img.cfs")
	if msg, err := exec.Command(bin, "--digest-store="+store, "--use-epoch", src, out).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	r, err := erofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.Tree()
	if err != nil {
		t.Fatal(err)
	}
	f := root.Lookup("d/big")
	if f == nil || f.Payload == "" {
		t.Fatalf("d/big: %+v", f)
	}
	obj, err := os.ReadFile(filepath.Join(store, f.Payload))
	if err != nil || !bytes.Equal(obj, big) {
		t.Errorf("object %s: %v (content equal: %v)", f.Payload, err, bytes.Equal(obj, big))
	}
	if l := root.Lookup("link"); l == nil || l.Target != "d/big" {
		t.Errorf("link: %+v", l)
	}
	if s := root.Lookup("small"); s == nil || string(s.Content) != "hi\n" || s.Mtime.Sec != 0 {
		t.Errorf("small: %+v", s)
	}
}

// TestMkcomposefsProcFd runs the binary the way containers/storage does:
// the dump on standard input, the image to /proc/self/fd/3, an inherited
// descriptor of the file it then enables fs-verity on.
func TestMkcomposefsProcFd(t *testing.T) {
	bin := mkcomposefsBin(t)
	positive, _ := mkcomposefsAssets(t)
	a := positive[0]
	out, err := os.Create(filepath.Join(t.TempDir(), "image"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, append(a.args(), "--from-file", "-", "/proc/self/fd/3")...)
	cmd.ExtraFiles = []*os.File{out}
	cmd.Stdin = bytes.NewReader(a.dump(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
	}
	img, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256Hex(img); got != a.sha256 {
		t.Errorf("%s: image sha256 %s, want %s", a.name, got, a.sha256)
	}
}

// TestMkcomposefsLargeDump: a dump large enough that the build's heap is
// made ready in huge pages first (hugeheap.Grow, from 1 MB of dump) gives
// the image the library writes from the same tree, byte for byte: from the
// mapped file, from standard input as a pipe (read in pieces, the heap
// grown after the first MB: how containers/storage runs it) and as a file.
func TestMkcomposefsLargeDump(t *testing.T) {
	root := gentree.Tree(gentree.Spec{Dirs: 400, Files: 12000, Symlinks: 300, TotalBytes: 1 << 20, Seed: 3})
	var dump, want bytes.Buffer
	if err := erofs.WriteDump(&dump, root); err != nil {
		t.Fatal(err)
	}
	if dump.Len() < 2*pipeProbe {
		t.Fatalf("the dump has %d bytes, too few for hugeheap.Grow (from %d)", dump.Len(), pipeProbe)
	}
	if err := erofs.WriteImage(&want, root, erofs.DefaultWriteOptions()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "tree.dump"), filepath.Join(dir, "tree.cfs")
	if err := os.WriteFile(in, dump.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := mkcomposefsBin(t)
	if b, err := exec.Command(bin, "--from-file", in, out).CombinedOutput(); err != nil {
		t.Fatalf("mkcomposefs --from-file: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("mkcomposefs --from-file %s (%d bytes): image differs from erofs.WriteImage's (%d vs %d bytes)", in, dump.Len(), len(got), want.Len())
	}
	cmd := exec.Command(bin, "--from-file", "-", "-")
	cmd.Stdin = bytes.NewReader(dump.Bytes())
	got, err = cmd.Output()
	if err != nil {
		t.Fatalf("mkcomposefs --from-file - -: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("mkcomposefs --from-file - - (a pipe): image differs from erofs.WriteImage's (%d vs %d bytes)", len(got), want.Len())
	}
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd = exec.Command(bin, "--from-file", "-", "-")
	cmd.Stdin = f
	if got, err = cmd.Output(); err != nil {
		t.Fatalf("mkcomposefs --from-file - - < %s: %v", in, err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("mkcomposefs --from-file - - < %s: image differs from erofs.WriteImage's (%d vs %d bytes)", in, len(got), want.Len())
	}
}
