package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"syscall"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/hugeheap"
	"github.com/mossfs/mossfs/tree"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var mkcomposefsFlags struct {
	fromFile        bool
	digestStore     string
	printDigest     bool
	printDigestOnly bool
	useEpoch        bool
	skipDevices     bool
	skipXattrs      bool
	userXattrs      bool
	minVersion      int
	maxVersion      int
	threads         int
}

var mkcomposefsCmd = &cobra.Command{
	Use:   "mkcomposefs [flags] SOURCE IMAGE",
	Short: "Build a composefs image from a directory or a dump, like mkcomposefs",
	Long: `mkcomposefs writes the composefs EROFS image of SOURCE to IMAGE, byte for byte
what composefs's mkcomposefs 1.0.8 writes. SOURCE is a directory, or with
--from-file a composefs dump (composefs-dump(5)); "-" reads the dump from
standard input. IMAGE "-" writes to standard output (never a terminal); a
file is written under a temporary name and renamed into place when complete.

From a directory, regular files of more than 64 bytes become external files
named by their fs-verity digest; --digest-store=DIR copies them into DIR as
DIR/xx/<62 hex> (the overlay data-only layer). --use-epoch, --skip-devices,
--skip-xattrs and --user-xattrs change what is taken from the directory.

The format version is chosen in --min-version..--max-version (0 or 1; by
default 0..1; when only one is given the other defaults to 0, and a max below
min is raised to it): version 1 only when the tree has whiteouts.
CFS_PARSE_STRICT=1 in the environment parses dumps strictly.`,
	Args: cobra.RangeArgs(1, 2),
	RunE: runMkcomposefs,
}

func init() {
	fl := mkcomposefsCmd.Flags()
	f := &mkcomposefsFlags
	fl.BoolVar(&f.fromFile, "from-file", false, "SOURCE is a composefs dump file (\"-\": standard input)")
	fl.StringVar(&f.digestStore, "digest-store", "", "copy file contents into this object directory (directory SOURCE)")
	fl.BoolVar(&f.printDigest, "print-digest", false, "print the image's fs-verity digest")
	fl.BoolVar(&f.printDigestOnly, "print-digest-only", false, "print the image's fs-verity digest and write no image")
	fl.BoolVar(&f.useEpoch, "use-epoch", false, "set every mtime to 0 (directory SOURCE)")
	fl.BoolVar(&f.skipDevices, "skip-devices", false, "leave out device files (directory SOURCE)")
	fl.BoolVar(&f.skipXattrs, "skip-xattrs", false, "read no xattrs (directory SOURCE)")
	fl.BoolVar(&f.userXattrs, "user-xattrs", false, "keep only user.* xattrs (directory SOURCE)")
	fl.IntVar(&f.minVersion, "min-version", 0, "lowest composefs format version (0 or 1)")
	fl.IntVar(&f.maxVersion, "max-version", 1, "highest composefs format version (0 or 1)")
	fl.IntVar(&f.threads, "threads", 0, "threads hashing and storing files (0: one per CPU)")
	rootCmd.AddCommand(mkcomposefsCmd)
}

// mkcomposefsVersions applies mkcomposefs's defaults: 0..1 when neither
// bound is given; when one is, the other defaults to 0, and a max below min
// is raised to min.
func mkcomposefsVersions(minSet, maxSet bool, minV, maxV int) (erofs.WriteOptions, error) {
	switch {
	case !minSet && !maxSet:
		return erofs.DefaultWriteOptions(), nil
	case !minSet:
		minV = 0
	case !maxSet:
		maxV = 0
	}
	for _, v := range []int{minV, maxV} {
		if v < 0 || v > erofs.MaxComposefsVersion {
			return erofs.WriteOptions{}, fmt.Errorf("composefs version %d not supported (0 to %d)", v, erofs.MaxComposefsVersion)
		}
	}
	maxV = max(maxV, minV)
	return erofs.WriteOptions{MinVersion: minV, MaxVersion: maxV}, nil
}

func runMkcomposefs(cmd *cobra.Command, args []string) (err error) {
	f := &mkcomposefsFlags
	source := args[0]
	image := ""
	switch {
	case len(args) == 2:
		image = args[1]
	case !f.printDigestOnly:
		return errors.New("mkcomposefs: no IMAGE given")
	}
	opts, err := mkcomposefsVersions(cmd.Flags().Changed("min-version"), cmd.Flags().Changed("max-version"), f.minVersion, f.maxVersion)
	if err != nil {
		return fmt.Errorf("mkcomposefs: %w", err)
	}
	if f.skipXattrs && f.userXattrs {
		return errors.New("mkcomposefs: --skip-xattrs and --user-xattrs conflict")
	}
	if image == "-" && !f.printDigestOnly && cli.IsTerminal(os.Stdout) {
		return errors.New("mkcomposefs: standard output is a terminal, refusing to write an image to it")
	}

	var root *tree.Node
	var store *cas.Store
	if f.fromFile {
		if f.digestStore != "" {
			return errors.New("mkcomposefs: --digest-store needs a directory SOURCE, not --from-file")
		}
		gcOff := noCollection(source)
		defer faultError(source, &err)
		root, err = readDumpSource(source, gcOff)
	} else {
		root, store, err = importDirSource(cmd.Context(), source)
	}
	if err != nil {
		return fmt.Errorf("mkcomposefs: %w", err)
	}

	// The image is streamed to its destination (and to the fs-verity
	// hasher for --print-digest): it is never whole in memory.
	var hasher *fsverity.Hasher
	var sinks []io.Writer
	if f.printDigest || f.printDigestOnly {
		hasher = fsverity.New()
		sinks = append(sinks, hasher)
	}
	var out *imageOutput
	if !f.printDigestOnly {
		if out, err = openImageOutput(image); err != nil {
			return fmt.Errorf("mkcomposefs: %w", err)
		}
		defer out.abort()
		sinks = append(sinks, out.w)
	}
	if err := erofs.WriteImage(io.MultiWriter(sinks...), root, opts); err != nil {
		if out != nil && out.written() {
			return fmt.Errorf("mkcomposefs: %s: %w", out.name(), err)
		}
		return fmt.Errorf("mkcomposefs: %s: %w", source, err)
	}
	if store != nil {
		// The image refers to these objects: make them durable first.
		if err := store.Sync(); err != nil {
			return fmt.Errorf("mkcomposefs: digest store %s: %w", f.digestStore, err)
		}
	}
	if out != nil {
		if err := out.commit(); err != nil {
			return fmt.Errorf("mkcomposefs: %w", err)
		}
	}
	if hasher != nil {
		d := hasher.Sum()
		if _, err := fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(d[:])); err != nil {
			return fmt.Errorf("mkcomposefs: print digest: %w", err)
		}
	}
	return nil
}

// imageOutput is where mkcomposefs writes IMAGE. A new or regular file is
// written through a temporary file in the same directory that is synced
// and then renamed, so that IMAGE is either absent, the old file, or the
// whole new image. Anything else (a symlink such as /proc/self/fd/3, which
// containers/storage passes, a device, a fifo) is opened and written in
// place, as mkcomposefs's fopen(path, "w") does; "-" is standard output.
type imageOutput struct {
	path string
	f    *os.File // the temporary file, or the file opened in place
	tmp  bool
	w    *countingWriter
	done bool
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func openImageOutput(path string) (*imageOutput, error) {
	o := &imageOutput{path: path}
	switch st, err := os.Lstat(path); {
	case path == "-":
		o.w = &countingWriter{w: os.Stdout}
		return o, nil
	case err == nil && !st.Mode().IsRegular():
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		o.f = f
	default:
		f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		o.f, o.tmp = f, true
	}
	o.w = &countingWriter{w: o.f}
	return o, nil
}

// name is what error messages call the output.
func (o *imageOutput) name() string {
	if o.path == "-" {
		return "standard output"
	}
	return o.path
}

// written reports whether any of the image went out.
func (o *imageOutput) written() bool { return o.w.n > 0 }

// commit finishes the image: a temporary file gets fopen's mode, is synced
// and renamed into place.
func (o *imageOutput) commit() error {
	o.done = true
	if o.f == nil {
		return nil
	}
	if !o.tmp {
		if err := o.f.Close(); err != nil {
			return fmt.Errorf("write image %s: %w", o.path, err)
		}
		return nil
	}
	fail := func(err error) error {
		o.f.Close()
		os.Remove(o.f.Name())
		return fmt.Errorf("write image %s: %w", o.path, err)
	}
	// The mode fopen(path, "w") would give it.
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	if err := o.f.Chmod(0o666 &^ os.FileMode(umask)); err != nil {
		return fail(err)
	}
	if err := o.f.Sync(); err != nil {
		return fail(err)
	}
	if err := o.f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(o.f.Name(), o.path); err != nil {
		os.Remove(o.f.Name())
		return fmt.Errorf("write image %s: %w", o.path, err)
	}
	return nil
}

// abort removes the temporary file unless commit ran.
func (o *imageOutput) abort() {
	if o.done || o.f == nil {
		return
	}
	o.f.Close()
	if o.tmp {
		os.Remove(o.f.Name())
	}
}

// readDumpSource parses a dump file, "-" being standard input.
//
// A regular file is mapped (and its pages mapped in at once) instead of
// read into the heap: the tree's strings are slices of the mapping, which
// stays until the process ends. For the 65k-entry dump of the benchmark
// (12.8 MB) reading cost about 3,100 page faults and a copy, the mapping
// about 200 faults. If the file is truncated while the tree is in use, the
// build ends with an error instead of a crash (SetPanicOnFault, recovered by
// the caller): parse, layout and the streamed write run in this goroutine,
// and the goroutines the layout of a large tree starts hand their faults
// back to it (erofs.inParallel).
//
// A pipe (how containers/storage runs mkcomposefs: --from-file - -) is
// read whole first, see readPipe.
func readDumpSource(source string, gcOff bool) (*tree.Node, error) {
	opts := erofs.DumpOptions{Strict: os.Getenv("CFS_PARSE_STRICT") == "1", Name: source}
	if source == "-" {
		opts.Name = "<stdin>"
		if st, err := os.Stdin.Stat(); err == nil && !st.Mode().IsRegular() {
			data, err := readPipe(os.Stdin, gcOff)
			if err != nil {
				return nil, fmt.Errorf("%s: read dump: %w", opts.Name, err)
			}
			return erofs.ParseDumpBytes(data, opts)
		}
		return erofs.ParseDump(os.Stdin, opts)
	}
	file, err := os.Open(source)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if st, err := file.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > 0 && st.Size() == int64(int(st.Size())) {
		data, err := unix.Mmap(int(file.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
		if err == nil {
			debug.SetPanicOnFault(true)
			return erofs.ParseDumpBytes(data, opts)
		}
	}
	return erofs.ParseDump(file, opts)
}

// pipeProbe is how much of a dump of unknown size is read before deciding
// whether the build's heap is made ready in huge pages.
const pipeProbe = 1 << 20

// pipeHeap is the heap made ready for a dump from a pipe of more than
// pipeProbe bytes, whose size is not known ahead: the heap of the 65k-entry
// dump's build (12.8 MB) and its read buffers come to ~60 MB. What the
// build does not touch costs no memory.
const pipeHeap = 128 << 20

// readPipe reads a dump of unknown size to its end. A dump larger than
// pipeProbe (~5k entries) gets the build's heap made ready in huge pages
// (hugeheap.Grow, when the collector is off) before the rest is read, as
// noCollection does for a file; a smaller one does not pay for it.
func readPipe(r io.Reader, gcOff bool) ([]byte, error) {
	buf := make([]byte, 0, pipeProbe)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) == pipeProbe && gcOff {
				hugeheap.Grow(pipeHeap)
			}
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// noCollection turns the garbage collector off for a build from a dump,
// unless GOGC or GOMEMLIMIT say otherwise, and reports whether it did: what
// it allocates (the tree, its layout, the image) stays live until the image
// is written, so a collection finds next to nothing to free and only costs
// marking. A memory limit well above what a build of the dump needs (about
// 2.3× its size) brings collections back should something grow beyond it.
//
// The heap the build will fill is then made ready in huge pages: for the
// 65k-entry dump of the benchmark (12.8 MB, ~30 MB of heap) first writes to
// fresh 4 KiB pages cost ~7,700 page faults, about half of the command's
// CPU time on a virtual machine (see hugeheap). Four times the dump is
// asked for (what the build does not touch costs no memory); not for a
// dump under 1 MB (~5k entries), whose build it slows (the collection that
// Grow runs, whole huge pages zeroed for a few pages used). A dump from a
// pipe, of unknown size, is left to readPipe.
func noCollection(source string) bool {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return false
	}
	limit := int64(1 << 30)
	var size int64
	st, err := os.Stat(source)
	if source == "-" {
		st, err = os.Stdin.Stat()
	}
	if err == nil && st.Mode().IsRegular() {
		size = st.Size()
		limit = max(limit, 16*size)
	}
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(limit)
	if size >= 1<<20 {
		hugeheap.Grow(int(min(max(4*size, hugeheap.MinSize), limit/4)))
	}
	return true
}

// faultError turns the panic of a memory fault in a mapped dump (the file
// was truncated under us, see readDumpSource) into an error, and lets any
// other panic go on.
func faultError(source string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		*err = fmt.Errorf("mkcomposefs: %s: the dump changed while it was read (truncated?): %v", source, f)
		return
	}
	panic(r)
}

// importDirSource builds the tree of a directory, storing contents in the
// digest store when one is given.
func importDirSource(ctx context.Context, dir string) (*tree.Node, *cas.Store, error) {
	f := &mkcomposefsFlags
	if st, err := os.Stat(dir); err != nil {
		return nil, nil, err
	} else if !st.IsDir() {
		return nil, nil, fmt.Errorf("%s is not a directory (a dump needs --from-file)", dir)
	}
	var store *cas.Store
	opts := dirimport.Options{
		UseEpoch:    f.useEpoch,
		SkipDevices: f.skipDevices,
		SkipXattrs:  f.skipXattrs,
		UserXattrs:  f.userXattrs,
		Threads:     f.threads,
	}
	if f.digestStore != "" {
		if err := os.MkdirAll(f.digestStore, 0o755); err != nil {
			return nil, nil, fmt.Errorf("digest store: %w", err)
		}
		s, err := cas.OpenObjectDir(f.digestStore)
		if err != nil {
			return nil, nil, err
		}
		store, opts.Sink = s, s
	}
	if ctx == nil {
		ctx = context.Background()
	}
	root, err := dirimport.Import(ctx, dir, opts)
	if err != nil {
		return nil, nil, err
	}
	return root, store, nil
}
