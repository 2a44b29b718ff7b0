package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/crc64iso"
	"github.com/mossfs/mossfs/oci/layer"
	"github.com/mossfs/mossfs/tree"
)

// Layer compressions an export can write.
const (
	CompressionZstdChunked = "zstd:chunked"
	CompressionZstd        = "zstd"
	CompressionGzip        = "gzip"
	CompressionNone        = "none"
)

// zstdLevel is the zstd level of every zstd and zstd:chunked layer. It is
// pinned (c/image's zstd:chunked default would be 10) so that the same
// binary always writes the same bytes, at the speed of zstd's default level.
const zstdLevel = 3

// ContentOpener opens the content of a regular file that has a payload
// (an object in the store).
type ContentOpener func(n *tree.Node) (io.ReadCloser, error)

// LayerBlob is one written layer.
type LayerBlob struct {
	DiffID    [32]byte // sha256 of the uncompressed tar
	Digest    [32]byte // sha256 of the blob
	Size      int64    // blob bytes
	MediaType string
	// Annotations of the layer descriptor (zstd:chunked's TOC position).
	Annotations map[string]string
	// Entries is the number of tar entries written; Skipped names what a
	// tar cannot carry (sockets).
	Entries int
	Skipped []string
}

// Media types of OCI layers.
const (
	mediaTypeLayerTar  = "application/vnd.oci.image.layer.v1.tar"
	mediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
)

type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64 // bytes written, or queued when async
	// bw (w) buffers writes to out.
	bw  *bufio.Writer
	out io.Writer

	// With async (zstd:chunked), the bytes are hashed and written by a
	// goroutine of their own, in the order they were queued: at the end of
	// an export the ordered writer was the one goroutine left with work
	// (the blob's sha256 and its writes, the diff_id's sha256), and one
	// CPU of two idled for the last 0.4 s of 3. n counts what is queued,
	// so offsets into the blob are known when the bytes are queued.
	queue  chan blobWrite
	done   chan struct{}
	err    error       // the writer goroutine's first error (read after done)
	failed atomic.Bool // an error happened: fail new writes early
}

// blobWrite is a piece of the blob queued for the writer goroutine, and
// what gives its buffer back once written.
type blobWrite struct {
	p       []byte
	release func([]byte)
}

// errBlobWriter is what writes return once the writer goroutine has
// failed; its own error, which names the cause, comes from wait.
var errBlobWriter = errors.New("writing the layer blob failed")

// blobQueue is how many pieces may wait for the writer goroutine: a job's
// frames each (a few KiB on average in the 65k-entry tree), so that the
// ordered writer runs ahead of it by a bounded amount of memory.
const blobQueue = 256

// async starts the writer goroutine. wait must be called before the digest,
// the size or the underlying writers are used.
func (hw *hashingWriter) async() {
	hw.queue, hw.done = make(chan blobWrite, blobQueue), make(chan struct{})
	go func() {
		defer close(hw.done)
		for bw := range hw.queue {
			if hw.err == nil {
				hw.err = hw.put(bw.p)
				if hw.err != nil {
					hw.failed.Store(true)
				}
			}
			if bw.release != nil {
				bw.release(bw.p)
			}
		}
	}()
}

// wait lets the writer goroutine write everything queued, ends it, and
// returns its first error. Without async it does nothing.
func (hw *hashingWriter) wait() error {
	if hw.queue == nil {
		return nil
	}
	close(hw.queue)
	<-hw.done
	hw.queue = nil
	return hw.err
}

// directMin is the size from which writeLarge hands bytes to the blob's
// file itself instead of copying them through the buffer first.
const directMin = 64 << 10

// put hashes and writes p, unbuffered when it is large.
func (hw *hashingWriter) put(p []byte) error {
	if hw.bw == nil || len(p) < directMin {
		n, err := hw.w.Write(p)
		hw.h.Write(p[:n])
		return err
	}
	if err := hw.bw.Flush(); err != nil {
		return err
	}
	n, err := hw.out.Write(p)
	hw.h.Write(p[:n])
	return err
}

// writeLarge writes p like Write, but unbuffered when it is large. With
// async it takes p: release gets it back once written (release may be nil).
func (hw *hashingWriter) writeLarge(p []byte, release func([]byte)) error {
	if hw.queue == nil {
		err := hw.put(p)
		hw.n += int64(len(p))
		if release != nil {
			release(p)
		}
		return err
	}
	if hw.failed.Load() {
		return errBlobWriter // wait returns the error itself
	}
	hw.n += int64(len(p))
	hw.queue <- blobWrite{p: p, release: release}
	return nil
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	if hw.queue == nil {
		n, err := hw.w.Write(p)
		hw.h.Write(p[:n])
		hw.n += int64(n)
		return n, err
	}
	// The caller may reuse p once Write returns.
	b := getBuf(len(p))
	copy(b, p)
	if err := hw.writeLarge(b, putBuf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteLayer writes the tree below root (root itself excluded) as a
// reproducible tar layer, compressed as asked, to out. Entries come in
// sorted depth-first order with the tree's own modes, owners, mtimes and
// xattrs (PAX SCHILY.xattr), in PAX format, with no user or group names and
// no access or change times; the first name of a hardlinked inode carries
// the content and later names are hard links to it. Regular files' contents
// come from their inline Content or, for payloads, from open. If tee is
// not nil, the uncompressed tar is written to it too.
//
// Contents are read, and zstd:chunked frames compressed, by one worker per
// CPU; everything is written in tar order, so the bytes do not depend on
// the number of workers.
func WriteLayer(out io.Writer, root *tree.Node, compression string, open ContentOpener, tee io.Writer) (*LayerBlob, error) {
	return writeLayer(out, root, compression, open, layerHooks{tee: tee})
}

// layerHooks are what an export needs beside the blob.
type layerHooks struct {
	// tee receives the uncompressed tar.
	tee io.Writer
	// entries, if set, receives the layer's entries as they are written
	// (for the composefs applier), with the fs-verity digest of each
	// regular file's content of more than layer.InlineMax bytes: the
	// store's record of the object, or computed from the content when the
	// tree has none.
	entries *entryFeed
	// workers overrides the number of workers (tests; 0: GOMAXPROCS).
	workers int
	// shas is the store's record of its objects' sha256, by fs-verity
	// digest (ExportRequest.ContentSHA256): a zstd:chunked TOC digest
	// found there is not computed.
	shas map[[32]byte][32]byte
	// chunking of a zstd:chunked layer ("": ChunkFiles).
	chunking Chunking
}

// entryFeed hands the layer to the composefs applier on its own goroutine
// as what the ordered writer has in hand: the tar headers themselves (the
// applier applies them as a tar reader would return them, with nothing to
// format or parse), the contents of up to layer.InlineMax bytes, and the
// fs-verity digests of the larger ones. A channel, so that the writer never
// waits for the applier.
type entryFeed struct {
	ch chan feedJob
}

// feedJob is a job's entries: the last one has the content, if the job
// has one (content: inline bytes; told: the digest of a larger content).
type feedJob struct {
	items   []tarItem
	content []byte
	told    bool
	size    int64
	verity  [32]byte
}

func newEntryFeed() *entryFeed { return &entryFeed{ch: make(chan feedJob, 4096)} }

// close ends the stream (the writer is done).
func (f *entryFeed) close() { close(f.ch) }

// drain discards what is still sent (the applier gave up).
func (f *entryFeed) drain() {
	for range f.ch {
	}
}

// Tuning of the pipeline. Files larger than bigFile are read and
// compressed by the ordered writer itself, streaming, in pieces of
// pieceSize; the jobs in flight hold at most inFlight bytes of content.
const (
	bigFile   = 16 << 20
	pieceSize = 1 << 20
	inFlight  = 64 << 20
	maxJobs   = 256
)

// tarItem is one tar entry of a job: its header and where its header
// blocks lie in the job's pre bytes.
type tarItem struct {
	hdr        *tar.Header
	start, end int
}

// layerJob is the tar stream from the end of one file's content to the end
// of the next one's: padding, the headers in between, then the content (or,
// for the last job, the end-of-archive blocks).
type layerJob struct {
	pre   []byte // padding of the previous content, headers (, end of archive)
	items []tarItem
	ino   *tree.Node // the content of the last item; nil for the last job
	node  *tree.Node // the name written with the content (errors name it)
	big   bool
	cost  int64 // bytes of the in-flight budget it holds

	// Set by a worker before done is closed.
	content []byte
	verity  [32]byte
	crc     []byte
	frames  []byte // zstd:chunked: the job's frames
	digest  string
	start   int64 // offsets of the content frames within frames
	end     int64
	chunks  []fileChunk
	err     error
	done    chan struct{}
}

func writeLayer(out io.Writer, root *tree.Node, compression string, open ContentOpener, hooks layerHooks) (*LayerBlob, error) {
	bw := bufio.NewWriterSize(out, 1<<20) // a write per frame would be a syscall per file
	blob := &hashingWriter{w: bw, h: sha256.New(), bw: bw, out: out}
	lb := &LayerBlob{Annotations: map[string]string{}}
	var comp io.WriteCloser
	var meta *chunkedMeta
	var err error
	switch compression {
	case CompressionZstdChunked, "":
		meta, err = newChunkedMeta(hooks.chunking)
		lb.MediaType = mediaTypeLayerZstd
	case CompressionZstd:
		// One stream; its encoder overlaps a block's compression with the
		// next block's filling, and its bytes do not depend on that
		// concurrency. (Compressing jobs of the stream in parallel,
		// WithConcurrentBlocks, cost more CPU than it saved here: +29% on
		// the small tree, its job buffers faulted in for each export.)
		comp, err = zstd.NewWriter(blob, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(zstdLevel)))
		lb.MediaType = mediaTypeLayerZstd
	case CompressionGzip:
		comp, err = gzip.NewWriterLevel(blob, gzip.DefaultCompression)
		lb.MediaType = mediaTypeLayerGzip
	case CompressionNone:
		comp = nopCloser{blob}
		lb.MediaType = mediaTypeLayerTar
	default:
		return nil, fmt.Errorf("unknown layer compression %q (zstd:chunked, zstd, gzip or none)", compression)
	}
	if err != nil {
		return nil, fmt.Errorf("layer compressor: %w", err)
	}
	diff := sha256.New()
	plainW := []io.Writer{diff}
	if comp != nil {
		plainW = append(plainW, comp)
	}
	if hooks.tee != nil {
		plainW = append(plainW, hooks.tee)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lw := &layerWriter{
		plain: io.MultiWriter(plainW...), blob: blob, meta: meta, open: open, hooks: hooks,
		budget: semaphore.NewWeighted(inFlight), ctx: ctx, stop: cancel,
	}
	if meta != nil {
		blob.async()
	}
	werr := lw.run(root, lb)
	if comp != nil {
		if cerr := comp.Close(); werr == nil && cerr != nil {
			werr = fmt.Errorf("layer compressor: %w", cerr)
		}
	}
	if werr == nil && meta != nil {
		werr = meta.finish(blob, blob.n, lb.Annotations)
	}
	if err := blob.wait(); err != nil && (werr == nil || errors.Is(werr, errBlobWriter)) {
		werr = err
	}
	if werr == nil {
		werr = bw.Flush()
	}
	if werr != nil {
		return nil, werr
	}
	copy(lb.DiffID[:], diff.Sum(nil))
	copy(lb.Digest[:], blob.h.Sum(nil))
	lb.Size = blob.n
	if len(lb.Annotations) == 0 {
		lb.Annotations = nil
	}
	return lb, nil
}

type layerWriter struct {
	plain  io.Writer // the uncompressed tar: diff_id, tee, and the compressor unless zstd:chunked
	blob   *hashingWriter
	meta   *chunkedMeta // zstd:chunked only
	open   ContentOpener
	hooks  layerHooks
	budget *semaphore.Weighted
	ctx    context.Context // cancelled (stop) when the ordered writer ends
	stop   context.CancelFunc
	fw     *frameWriter // the ordered writer's own (big files, the last job)
}

// run produces the jobs (one goroutine), has workers read and compress
// them, and writes them in order.
func (w *layerWriter) run(root *tree.Node, lb *LayerBlob) error {
	workers := w.hooks.workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ordered := make(chan *layerJob, maxJobs)
	work := make(chan *layerJob, maxJobs)
	var wg sync.WaitGroup
	var perr error
	wg.Go(func() {
		defer close(ordered)
		defer close(work)
		perr = w.produce(root, lb, ordered, work)
	})
	for range workers {
		wg.Go(func() {
			fw := newFrameWriter(w.hooks.chunking)
			for j := range work {
				if j.err = w.ctx.Err(); j.err == nil {
					j.err = w.prepare(j, fw)
				}
				close(j.done)
			}
		})
	}
	err := w.consume(ordered)
	w.stop()
	for range ordered { // let the producer end
	}
	wg.Wait()
	if err == nil {
		err = perr
	}
	return err
}

// produce walks the tree in tar order and cuts the tar stream into jobs.
func (w *layerWriter) produce(root *tree.Node, lb *LayerBlob, ordered, work chan<- *layerJob) error {
	root.Sort()
	first := map[*tree.Node]string{} // inode -> name written with its content
	var pre bytes.Buffer
	var items []tarItem
	// One formatter writes every header into pre; the contents go
	// nowhere (they are the jobs'), and their padding reaches pre as the
	// next header or the end of the archive is written.
	var tf tarFormatter
	send := func(j *layerJob) error {
		j.pre, j.items, j.done = getBuf(pre.Len()), items, make(chan struct{})
		copy(j.pre, pre.Bytes())
		pre.Reset()
		items = nil
		if j.ino != nil {
			j.cost = min(int64(j.ino.Size), inFlight)
			if j.big = j.ino.Size > bigFile; j.big {
				j.cost = 0
			}
			if err := w.budget.Acquire(w.ctx, j.cost); err != nil {
				return err
			}
		}
		select {
		case ordered <- j:
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
		if j.ino == nil || j.big {
			close(j.done)
			return nil
		}
		select {
		case work <- j:
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
		return nil
	}
	var walk func(dir *tree.Node, prefix string) error
	walk = func(dir *tree.Node, prefix string) error {
		for _, c := range dir.Children {
			name := prefix + c.Name
			hdr, err := entryHeader(c, name, first, lb)
			if err != nil {
				return err
			}
			if hdr != nil {
				start := pre.Len()
				if err := tf.header(&pre, hdr); err != nil {
					return fmt.Errorf("tar entry %s: %w", name, err)
				}
				items = append(items, tarItem{hdr: hdr, start: start, end: pre.Len()})
				if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
					if err := send(&layerJob{ino: c.Inode(), node: c}); err != nil {
						return err
					}
				}
			}
			if c.LinkTo == nil && c.IsDir() {
				if err := walk(c, name+"/"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return err
	}
	tf.end(&pre) // the last padding, the end of archive
	return send(&layerJob{})
}

const blockSize = 512

// bufs recycles the jobs' content and frame buffers.
var bufs bufPool

func getBuf(n int) []byte { return bufs.get(n) }

func putBuf(b []byte) { bufs.put(b) }

// entryHeader returns the tar header of n (nil for what a tar cannot carry,
// recorded in lb.Skipped).
func entryHeader(n *tree.Node, name string, first map[*tree.Node]string, lb *LayerBlob) (*tar.Header, error) {
	ino := n.Inode()
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(ino.Mode & 0o7777),
		Uid:     int(ino.UID),
		Gid:     int(ino.GID),
		ModTime: time.Unix(ino.Mtime.Sec, int64(ino.Mtime.Nsec)).UTC(),
		Format:  tar.FormatPAX,
	}
	if ino.Mtime.Nsec >= 1e9 {
		return nil, fmt.Errorf("%s: mtime nanoseconds %d out of range", n.Path(), ino.Mtime.Nsec)
	}
	typ := ino.Mode & tree.TypeMask
	if typ == tree.TypeReg {
		if prev, ok := first[ino]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, prev
			lb.Entries++
			return hdr, nil
		}
		first[ino] = name
	}
	if len(ino.Xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(ino.Xattrs))
		for _, x := range ino.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
	}
	switch typ {
	case tree.TypeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case tree.TypeLink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, ino.Target
	case tree.TypeChar, tree.TypeBlock:
		hdr.Typeflag = tar.TypeChar
		if typ == tree.TypeBlock {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(uint64(ino.Rdev)))
		hdr.Devminor = int64(unix.Minor(uint64(ino.Rdev)))
	case tree.TypeFifo:
		hdr.Typeflag = tar.TypeFifo
	case tree.TypeSock:
		lb.Skipped = append(lb.Skipped, n.Path())
		return nil, nil
	case tree.TypeReg:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(ino.Size)
		if ino.Size > 0 && ino.Content == nil && ino.Payload == "" {
			return nil, fmt.Errorf("%s: %d bytes but neither inline content nor a payload", n.Path(), ino.Size)
		}
	default:
		return nil, fmt.Errorf("%s: unknown file type %o", n.Path(), typ)
	}
	lb.Entries++
	return hdr, nil
}

// openContent opens a job's content.
func (w *layerWriter) openContent(j *layerJob) (io.ReadCloser, error) {
	if j.ino.Content != nil {
		return io.NopCloser(bytes.NewReader(j.ino.Content)), nil
	}
	r, err := w.open(j.ino)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j.node.Path(), err)
	}
	return r, nil
}

func (w *layerWriter) wantVerity(j *layerJob) bool {
	return w.hooks.entries != nil && j.ino.Size > layer.InlineMax
}

// knownVerity is the store's fs-verity digest of a payload, if it has one.
func knownVerity(ino *tree.Node) ([32]byte, bool) {
	var d [32]byte
	if ino.Content != nil || ino.Payload == "" || len(ino.Digest) != len(d) {
		return d, false
	}
	copy(d[:], ino.Digest)
	return d, true
}

// knownSHA256 is the store's record of the sha256 of a payload's content,
// as a TOC digest ("" if it has none).
func (w *layerWriter) knownSHA256(ino *tree.Node) string {
	d, ok := knownVerity(ino)
	if !ok || w.hooks.shas == nil {
		return ""
	}
	sha, ok := w.hooks.shas[d]
	if !ok {
		return ""
	}
	return "sha256:" + hex.EncodeToString(sha[:])
}

// prepare is a worker's part of a job: read the content whole, hash it,
// compress its frames.
func (w *layerWriter) prepare(j *layerJob, fw *frameWriter) error {
	if j.ino.Content != nil {
		j.content = j.ino.Content
	} else {
		r, err := w.openContent(j)
		if err != nil {
			return err
		}
		j.content = getBuf(int(j.ino.Size))
		_, err = io.ReadFull(r, j.content)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: content shorter than the image's %d bytes: %w", j.node.Path(), j.ino.Size, err)
		}
	}
	if uint64(len(j.content)) != j.ino.Size {
		return fmt.Errorf("%s: content is %d bytes, the image says %d", j.node.Path(), len(j.content), j.ino.Size)
	}
	if w.wantVerity(j) {
		var ok bool
		if j.verity, ok = knownVerity(j.ino); !ok {
			j.verity = fsverity.Sum(j.content)
		}
	}
	if w.meta == nil {
		return nil
	}
	j.crc = crc64iso.AppendSum(nil, crc64iso.Checksum(j.content)) // tar-split's storage.CRCTable
	buf := &frameBuf{b: getBuf(len(j.pre) + len(j.content) + len(j.content)/64 + 256)[:0]}
	fw.beginWhole(buf, j.pre, j.content, w.knownSHA256(j.ino))
	if err := fw.feed(j.content); err != nil {
		return err
	}
	d, err := fw.finish(j.content)
	if err != nil {
		return err
	}
	j.frames, j.digest, j.start, j.end, j.chunks = buf.b, d, fw.start, fw.out.n, slices.Clone(fw.chunks)
	return nil
}

// consume writes the jobs in order.
func (w *layerWriter) consume(ordered <-chan *layerJob) error {
	for j := range ordered {
		<-j.done
		if j.err != nil {
			return j.err
		}
		err := w.write(j)
		putBuf(j.pre)
		w.budget.Release(j.cost)
		if j.ino != nil && j.ino.Content == nil {
			putBuf(j.content)
		}
		putBuf(j.frames)
		j.content, j.frames = nil, nil
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *layerWriter) write(j *layerJob) error {
	if _, err := w.plain.Write(j.pre); err != nil {
		return err
	}
	var base int64 // blob offset of the job's frames (zstd:chunked only: a plain zstd encoder writes the blob from its own goroutine)
	if w.meta != nil {
		base = w.blob.n
	}
	if w.meta != nil && !j.big {
		if j.ino == nil { // the last job: its headers and the end of archive in one frame
			if w.fw == nil {
				w.fw = newFrameWriter(w.hooks.chunking)
			}
			if err := w.fw.begin(w.blob, j.pre); err != nil {
				return err
			}
			if err := w.fw.end(); err != nil {
				return err
			}
		} else {
			// The blob's writer gives the frames back to the pool.
			frames := j.frames
			j.frames = nil
			if err := w.blob.writeLarge(frames, putBuf); err != nil {
				return err
			}
		}
	}
	if j.big {
		if err := w.writeBig(j); err != nil {
			return err
		}
	} else if j.ino != nil {
		if _, err := w.plain.Write(j.content); err != nil {
			return err
		}
	}
	if w.hooks.entries != nil {
		fj := feedJob{items: j.items}
		switch {
		case j.ino == nil:
		case w.wantVerity(j):
			fj.told, fj.size, fj.verity = true, int64(j.ino.Size), j.verity
		case j.ino.Content != nil:
			fj.content = j.ino.Content
		default:
			fj.content = bytes.Clone(j.content) // content buffers are reused
		}
		w.hooks.entries.ch <- fj
	}
	if w.meta == nil {
		return nil
	}
	for i, it := range j.items {
		seg := j.pre[it.start:it.end]
		if i == 0 {
			seg = j.pre[:it.end]
		}
		if err := w.meta.segment(seg); err != nil {
			return err
		}
		e, err := tocEntryOf(it.hdr)
		if err != nil {
			return err
		}
		var crc []byte
		entries := []tocEntry{e}
		if j.ino != nil && i == len(j.items)-1 {
			crc = j.crc
			chunks := slices.Clone(j.chunks)
			for k := range chunks {
				chunks[k].Offset += base
			}
			entries = contentEntries(e, j.digest, base+j.start, base+j.end, chunks)
		}
		if err := w.meta.file(it.hdr, crc, entries...); err != nil {
			return err
		}
	}
	if j.ino == nil {
		tail := 0
		if len(j.items) > 0 {
			tail = j.items[len(j.items)-1].end
		}
		return w.meta.segment(j.pre[tail:])
	}
	return nil
}

// writeBig reads, hashes and compresses a large file's content in pieces,
// in order.
func (w *layerWriter) writeBig(j *layerJob) error {
	r, err := w.openContent(j)
	if err != nil {
		return err
	}
	defer r.Close()
	var fw *frameWriter
	var crc uint64
	if w.meta != nil {
		if w.fw == nil {
			w.fw = newFrameWriter(w.hooks.chunking)
		}
		fw = w.fw
		if err := fw.begin(w.blob, j.pre); err != nil {
			return err
		}
		if fw.known = w.knownSHA256(j.ino); fw.known == "" {
			fw.whole = sha256.New()
		}
	}
	known, hasKnown := knownVerity(j.ino)
	var vh *fsverity.Hasher
	if w.wantVerity(j) && !hasKnown {
		vh = fsverity.New()
	}
	buf := make([]byte, pieceSize)
	var n int64
	for n < int64(j.ino.Size) {
		k, err := io.ReadFull(r, buf[:min(int64(len(buf)), int64(j.ino.Size)-n)])
		if err != nil {
			return fmt.Errorf("%s: content shorter than the image's %d bytes: %w", j.node.Path(), j.ino.Size, err)
		}
		p := buf[:k]
		n += int64(k)
		if _, err := w.plain.Write(p); err != nil {
			return err
		}
		if vh != nil {
			vh.Write(p)
		}
		if fw != nil {
			crc = crc64iso.Update(crc, p)
			if err := fw.feed(p); err != nil {
				return err
			}
		}
	}
	j.verity = known
	if vh != nil {
		j.verity = vh.Sum()
	}
	if fw == nil {
		return nil
	}
	d, err := fw.finish(nil)
	if err != nil {
		return err
	}
	j.crc, j.digest, j.chunks = crc64iso.AppendSum(nil, crc), d, slices.Clone(fw.chunks)
	j.start, j.end = fw.start, fw.out.n
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
