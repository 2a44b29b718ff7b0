package sharetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/testenv"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/storage"
	stypes "go.podman.io/storage/types"
	"golang.org/x/sys/unix"
)

// pullOptions is the storage.conf table README documents: partial pulls
// on, and with index the store's sha256 index as an ostree_repos entry.
func pullOptions(index string) string {
	s := "[storage.options.pull_options]\nenable_partial_images = \"true\"\n"
	if index != "" {
		s += fmt.Sprintf("ostree_repos = %q\n", index)
	}
	return s
}

// fetched is one pull's cost as the registry saw it.
type fetched struct {
	Bytes    int64 // bytes sent for GETs of the layer blob
	Requests int
	Size     int64 // the layer blob's size
}

func (f fetched) pct() float64 { return 100 * float64(f.Bytes) / float64(f.Size) }

func (f fetched) String() string {
	return fmt.Sprintf("%d of %d bytes (%.1f%%) in %d requests", f.Bytes, f.Size, f.pct(), f.Requests)
}

// podmanPull pulls nameTag with Debian's podman into a new private store
// whose storage.conf has the pull options (with the index when index is
// not ""), returns what the registry sent for its layer, and checks the
// pulled image (podman image mount) holds B.
//
// Podman 4.3's partial pull (containers/storage 1.43) can lose files
// without failing: in one CI run at load ~20 its pull without the index
// got every byte of the layer from the registry (100.4%, by the access
// log) and still left 603 files out of the layer and one at mode 0000 (a
// file it created and never finished), while the pull with the index, of
// the same image from the same registry, came out whole; 14 repeats on
// this machine, 8 of them beside the exporttest package, did not show it
// again. That is podman's bug, not the image's, and the stores it pulls
// into are its own: such a pull is logged with podman's debug output and
// pulled once more into a new store, which must then hold B. A second
// wrong tree fails the test.
func podmanPull(t *testing.T, f *dedupFixture, nameTag, index string) fetched {
	t.Helper()
	got, diffs, log := podmanPullOnce(t, f, nameTag, index)
	if len(diffs) == 0 {
		return got
	}
	t.Logf("podman 4.3 lost files in a partial pull of %s (pulled again into a new store); its tree:\n%s\npodman's debug log, last lines:\n%s",
		nameTag, strings.Join(diffs, "\n"), log)
	got, diffs, _ = podmanPullOnce(t, f, nameTag, index)
	if len(diffs) > 0 {
		t.Errorf("podman image mount of %s differs from the image's layer, twice:\n%s", nameTag, strings.Join(diffs, "\n"))
	}
	return got
}

// podmanPullOnce is one pull of podmanPull: what the registry sent, how the
// mounted image differs from B, and the end of podman's debug log.
func podmanPullOnce(t *testing.T, f *dedupFixture, nameTag, index string) (fetched, []string, string) {
	t.Helper()
	c := ocitest.NewContainers(t, ocitest.Options{Registries: []string{f.Reg.Host}, ExtraStorageConf: pullOptions(index)})
	digest, size, _ := layerOf(t, f.Reg, f.Sys, nameTag)
	from := mark(t, f.Reg)
	cmd := exec.Command("podman", append(c.PodmanArgs(), "--log-level=debug", "pull", "-q", f.Reg.Name(nameTag))...)
	cmd.Env, cmd.Dir = c.Env, c.Dir
	var debug bytes.Buffer
	cmd.Stderr = &debug
	if err := cmd.Run(); err != nil {
		t.Fatalf("podman pull %s: %v\n%s", nameTag, err, lastLines(debug.String(), 40))
	}
	n, reqs := blobBytes(t, f.Reg, from, digest)
	mnt := strings.TrimSpace(string(c.Podman(t, "image", "mount", f.Reg.Name(nameTag))))
	defer c.Podman(t, "image", "unmount", f.Reg.Name(nameTag))
	diffs := treeDiffs(t, "podman image mount of "+nameTag, mnt, f.B)
	return fetched{Bytes: n, Requests: reqs, Size: size}, diffs, lastLines(debug.String(), 40)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// checkTree compares the tree below dir with want: names, types, modes,
// owners, contents, link targets, devices, xattrs and hardlinks. Mtimes
// are not compared: containers/storage's partial pulls leave directories
// and symlinks (podman 4.3's also many regular files) with the time of the
// pull; the count of those is logged.
func checkTree(t testing.TB, what, dir string, want treeMap) {
	t.Helper()
	if d := treeDiffs(t, what, dir, want); len(d) > 0 {
		t.Errorf("%s differs from the image's layer:\n%s", what, strings.Join(d, "\n"))
	}
}

// treeDiffs is checkTree's comparison: the differences, at most 20 and a
// count of the rest.
func treeDiffs(t testing.TB, what, dir string, want treeMap) []string {
	t.Helper()
	got, err := readDir(dir, "trusted.overlay.")
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	d, mtimes := diffTrees(want, got, false)
	if mtimes > 0 {
		t.Logf("%s: %d entries have other mtimes than the layer's (containers/storage does not keep them)", what, mtimes)
	}
	if len(d) > 20 {
		d = append(d[:20], fmt.Sprintf("... and %d more", len(d)-20))
	}
	return d
}

// TestDedup: the OS store holds transaction T; image B shares 90% of its
// files (one fixture for both clients).
func TestDedup(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newDedupFixture(t, dedupSpec())
	t.Run("podman-4.3", func(t *testing.T) { testPodmanDedup(t, f) })
	t.Run("storage-v1.65", func(t *testing.T) { testStorageDedup(t, f) })
}

// testPodmanDedup: Debian's podman 4.3 (containers/storage 1.43) with the
// store's sha256 index in ostree_repos pulls B, which shares 90% of
// transaction T's files, fetching at most 15% of its layer; the same pull
// without the index fetches all of it. Podman 4.3 knows zstd:chunked only
// as containers/image 5.23 wrote it (skopeo 1.9 here: io.containers.*
// annotations, no tar-split); the current format (io.github.containers.*
// annotations, what containers/image 5.42 and moss-oci export write) it
// downloads whole, index or not ("blob type not supported for partial
// retrieval"), which README says and this test checks.
func testPodmanDedup(t *testing.T, f *dedupFixture) {
	t.Logf("T and B: %d regular files with content, %d changed in B (%.1f%% of the files, %d of %d bytes: %.1f%%)",
		f.Files, f.Changed, 100*float64(f.Changed)/float64(f.Files), f.ChBytes, f.Bytes, 100*float64(f.ChBytes)/float64(f.Bytes))
	with := podmanPull(t, f, f.Skopeo19, f.Index)
	without := podmanPull(t, f, f.Skopeo19, "")
	t.Logf("podman 4.3, zstd:chunked by skopeo 1.9: with the index %v; without %v", with, without)
	if with.pct() > 15 {
		t.Errorf("with the index podman fetched %v: more than 15%%", with)
	}
	if without.pct() < 95 {
		t.Errorf("without the index podman fetched only %v: the counting is off", without)
	}
	current := podmanPull(t, f, f.Current, f.Index)
	t.Logf("podman 4.3, current zstd:chunked (containers/image 5.42), with the index: %v", current)
	if current.pct() < 95 {
		t.Errorf("podman 4.3 pulled the current zstd:chunked format partially (%v): README says it downloads it whole; update README", current)
	}
}

// storageConf writes a storage.conf for a store below dir with extra
// appended, and returns the options containers/storage reads from it
// (through CONTAINERS_STORAGE_CONF, as podman would).
func storageConf(tb testing.TB, dir, extra string) stypes.StoreOptions {
	tb.Helper()
	conf := filepath.Join(dir, "storage.conf")
	text := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n\n%s",
		filepath.Join(dir, "graph"), filepath.Join(dir, "run"), extra)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("CONTAINERS_STORAGE_CONF", conf)
	opts, err := stypes.LoadStoreOptions(stypes.LoadOptions{})
	if err != nil {
		tb.Fatalf("%s: %v", conf, err)
	}
	return opts
}

// openStore opens a containers/storage store; cleanup shuts it down and
// unmounts whatever it left below its directories.
func openStore(tb testing.TB, opts stypes.StoreOptions) storage.Store {
	tb.Helper()
	s, err := storage.GetStore(opts)
	if err != nil {
		tb.Fatalf("containers/storage: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := s.Shutdown(true); err != nil {
			tb.Logf("store shutdown: %v", err)
		}
		for _, d := range []string{opts.GraphRoot, opts.RunRoot} {
			for _, m := range mountsBelow(d) {
				unix.Unmount(m, unix.MNT_DETACH)
			}
		}
	})
	return s
}

// storagePull copies nameTag from the registry into store with
// containers/image (as podman 5 pulls) and returns the image's ID.
func storagePull(tb testing.TB, f *dedupFixture, store storage.Store, nameTag string) string {
	tb.Helper()
	named, err := reference.ParseNormalizedNamed(f.Reg.Name(nameTag))
	if err != nil {
		tb.Fatal(err)
	}
	src, err := docker.NewReference(named)
	if err != nil {
		tb.Fatal(err)
	}
	dst, err := istorage.Transport.ParseStoreReference(store, f.Reg.Name(nameTag))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := copy.Image(context.Background(), policyContext(tb), dst, src, &copy.Options{SourceCtx: f.Sys, DestinationCtx: f.Sys, ReportWriter: io.Discard}); err != nil {
		tb.Fatalf("pull %s into containers-storage: %v", nameTag, err)
	}
	img, err := store.Image(f.Reg.Name(nameTag))
	if err != nil {
		tb.Fatalf("containers/storage lost %s: %v", nameTag, err)
	}
	return img.ID
}

// libraryPull pulls nameTag with go.podman.io/storage into a new store
// configured by storage.conf (pull options, with the index when index is
// not ""), returns what the registry sent for its layer, and with check
// compares the mounted image (MountImage) with B.
func libraryPull(tb testing.TB, f *dedupFixture, nameTag, index string, check bool) fetched {
	tb.Helper()
	dir := tb.TempDir()
	store := openStore(tb, storageConf(tb, dir, pullOptions(index)))
	digest, size, _ := layerOf(tb, f.Reg, f.Sys, nameTag)
	from := mark(tb, f.Reg)
	id := storagePull(tb, f, store, nameTag)
	n, reqs := blobBytes(tb, f.Reg, from, digest)
	if check {
		mnt, err := store.MountImage(id, nil, "")
		if err != nil {
			tb.Fatalf("MountImage: %v", err)
		}
		checkTree(tb, "containers/storage mount of "+nameTag, mnt, f.B)
		if _, err := store.UnmountImage(id, true); err != nil {
			tb.Errorf("UnmountImage: %v", err)
		}
	}
	return fetched{Bytes: n, Requests: reqs, Size: size}
}

// testStorageDedup: go.podman.io/storage v1.65 (podman 5's) configured by
// the storage.conf lines README documents pulls B in the current
// zstd:chunked format (containers/image 5.42, as moss-oci export writes
// it) fetching at most 15% of its layer with the index, and all of it
// without; both pulls hold B.
func testStorageDedup(t *testing.T, f *dedupFixture) {
	with := libraryPull(t, f, f.Current, f.Index, true)
	without := libraryPull(t, f, f.Current, "", true)
	t.Logf("go.podman.io/storage v1.65, current zstd:chunked: with the index %v; without %v", with, without)
	if with.pct() > 15 {
		t.Errorf("with the index containers/storage fetched %v: more than 15%%", with)
	}
	if without.pct() < 95 {
		t.Errorf("without the index containers/storage fetched only %v: the counting is off", without)
	}
}

// BenchmarkPullBytes: bytes fetched from the registry by a
// containers/storage pull (go.podman.io/storage v1.65, current
// zstd:chunked) and by podman 4.3 (skopeo 1.9's zstd:chunked) of image B
// (90% of transaction T's files) into an empty store, with the store's
// sha256 index in ostree_repos and without, in the same run. Metrics:
// bytes with and without, and with/without in percent. Small in make
// test; MOSSFS_BENCH_FULL=1 uses gentree's Small tree for T.
func BenchmarkPullBytes(b *testing.B) {
	testenv.RequireMountNS(b)
	f := newDedupFixture(b, dedupSpec())
	b.Logf("T and B: %d regular files with content, %d changed in B (%d of %d bytes)", f.Files, f.Changed, f.ChBytes, f.Bytes)
	b.Run("storage", func(b *testing.B) {
		var with, without fetched
		for i := 0; i < b.N; i++ {
			with = libraryPull(b, f, f.Current, f.Index, false)
			without = libraryPull(b, f, f.Current, "", false)
		}
		report(b, with, without)
	})
	// podman 4.3 refuses a runroot path longer than 50 bytes: short name.
	b.Run("podman", func(b *testing.B) {
		var with, without fetched
		for i := 0; i < b.N; i++ {
			with = benchPodmanPull(b, f, f.Skopeo19, f.Index)
			without = benchPodmanPull(b, f, f.Skopeo19, "")
		}
		report(b, with, without)
	})
}

func report(b *testing.B, with, without fetched) {
	b.ReportMetric(float64(with.Bytes), "bytes-with-index")
	b.ReportMetric(float64(without.Bytes), "bytes-without-index")
	b.ReportMetric(100*float64(with.Bytes)/float64(without.Bytes), "%with/without")
	b.Logf("layer %d bytes: with the index %v; without %v", with.Size, with, without)
}

func benchPodmanPull(b *testing.B, f *dedupFixture, nameTag, index string) fetched {
	c := ocitest.NewContainers(b, ocitest.Options{Registries: []string{f.Reg.Host}, ExtraStorageConf: pullOptions(index)})
	digest, size, _ := layerOf(b, f.Reg, f.Sys, nameTag)
	from := mark(b, f.Reg)
	c.Podman(b, "pull", "-q", f.Reg.Name(nameTag))
	n, reqs := blobBytes(b, f.Reg, from, digest)
	return fetched{Bytes: n, Requests: reqs, Size: size}
}

// mountsBelow lists mount points at or below dir, deepest first.
func mountsBelow(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
