package erofs

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/mossfs/mossfs/tree"
)

// DumpOptions controls ParseDump.
type DumpOptions struct {
	// Strict adds the checks of mkcomposefs's CFS_PARSE_STRICT=1: a final
	// newline, RDEV 0 on non-devices, symlink SIZE equal to the target's
	// length and no CONTENT on symlinks. It never changes the tree.
	Strict bool
	// Name names the input in error messages (a file name, "-" for stdin).
	Name string
}

// DumpError is a syntax or consistency error in a composefs dump, at a line.
type DumpError struct {
	Name string // the input's name (DumpOptions.Name, or "dump")
	Line int    // 1-based line number
	Msg  string
}

func (e *DumpError) Error() string { return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg) }

// Limits of the dump format (composefs-format.md §1), as in mkcomposefs.
const (
	maxInlineContent = 5000      // CONTENT bytes
	maxNameLen       = 255       // a path component
	maxSymlinkLen    = 4096 - 1  // PATH_MAX including the NUL
	maxXattrNameLen  = 255       // XATTR_NAME_MAX
	maxXattrValueLen = 65535     // XATTR_SIZE_MAX
	maxXattrsText    = 65535     // raw bytes after the fixed fields of a line
	maxXattrBudget   = 32767     // Σ(7+len(key)+len(value))+12 per inode
	maxExternalSize  = 1 << 53   // MaxChunks chunks of 2^MaxChunkBits
	digestSize       = 32        // fs-verity SHA-256
	digestHexLen     = 2 * 32    //
	nodeSlabSize     = 1024      // nodes allocated at once
	byteArenaChunk   = 64 * 1024 // bytes allocated at once for small values
)

// The fixed fields of a line: PATH … MTIME are mandatory, a trailing run
// of PAYLOAD, CONTENT, DIGEST may be left out.
const (
	fieldPath = iota
	fieldSize
	fieldMode
	fieldNlink
	fieldUID
	fieldGID
	fieldRdev
	fieldMtime
	fieldPayload
	fieldContent
	fieldDigest
	numFixedFields
	numMandatory = fieldPayload
)

var fieldNames = [numFixedFields]string{"PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT", "DIGEST"}

// ParseDump reads a composefs dump (composefs-dump(5), as written by
// composefs-info dump and read by mkcomposefs --from-file) into a tree.
//
// The tree is the "source" tree an image is built from: children sorted by
// name, hardlinks as nodes with LinkTo, xattrs as written in the dump
// (unescaped overlay names). Fields that cannot reach an image are
// normalised away, so that the tree read back from the image equals it:
// SIZE of devices, fifos and sockets is 0, RDEV of non-devices is 0, a
// symlink's SIZE is its target's length, only regular files keep CONTENT,
// and only external regular files (SIZE > 0, no CONTENT) keep PAYLOAD and
// DIGEST. MODE keeps its low 16 bits.
//
// Errors are *DumpError values naming opts.Name and the line.
func ParseDump(r io.Reader, opts DumpOptions) (*tree.Node, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: read dump: %w", dumpName(opts), err)
	}
	// The tree's strings (names, targets, payloads, xattr names) are
	// substrings of the dump: view the buffer as a string instead of
	// copying it. data is never written again.
	return parseDumpString(unsafe.String(unsafe.SliceData(data), len(data)), opts)
}

// ParseDumpBytes is ParseDump of a dump already in memory, without copying
// it: the tree's strings share data's memory, so data must not be changed
// afterwards (compose parses the base's fragments this way and then writes
// or links the same bytes).
func ParseDumpBytes(data []byte, opts DumpOptions) (*tree.Node, error) {
	return parseDumpString(unsafe.String(unsafe.SliceData(data), len(data)), opts)
}

// readAll reads r to its end into a buffer of the right size when r can
// tell its length (bytes and strings readers, files).
func readAll(r io.Reader) ([]byte, error) {
	size := -1
	switch v := r.(type) {
	case interface{ Len() int }:
		size = v.Len()
	case *os.File:
		if st, err := v.Stat(); err == nil && st.Mode().IsRegular() {
			if off, err := v.Seek(0, io.SeekCurrent); err == nil {
				size = int(st.Size() - off)
			}
		}
	}
	if size < 0 {
		return io.ReadAll(r)
	}
	// One byte more, to see the end without growing.
	buf := make([]byte, 0, size+1)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

func dumpName(opts DumpOptions) string {
	if opts.Name == "" {
		return "dump"
	}
	return opts.Name
}

// dumpParser holds the state of one ParseDump call.
type dumpParser struct {
	opts DumpOptions
	name string
	line int
	root *tree.Node
	// dirs maps canonical paths ("a/b", root "") to directories. While the
	// dump lists each directory's entries in increasing order (as dumps
	// are written), that is all the parser needs: a name greater than the
	// last one added cannot be a duplicate. At the first entry out of
	// order, paths maps every path so far, and from then on every path.
	dirs          map[string]*tree.Node
	paths         map[string]*tree.Node
	lastParentKey string
	lastParent    *tree.Node
	links         []pendingLink

	nodes []tree.Node // slab of preallocated nodes
	arena []byte      // slab for small byte values (xattr values, digests)
	xbuf  []tree.Xattr
}

// pendingLink is a hardlink line whose target is resolved after the whole
// dump is read (a target may come later).
type pendingLink struct {
	node   *tree.Node
	target string
	line   int
}

func parseDumpString(s string, opts DumpOptions) (*tree.Node, error) {
	p := &dumpParser{opts: opts, name: dumpName(opts), dirs: make(map[string]*tree.Node)}
	if len(s) == 0 {
		return nil, &DumpError{Name: p.name, Line: 1, Msg: "empty dump: no root directory"}
	}
	if strings.IndexByte(s, 0) >= 0 {
		// Report the line of the NUL.
		i := strings.IndexByte(s, 0)
		return nil, &DumpError{Name: p.name, Line: strings.Count(s[:i], "\n") + 1, Msg: "NUL byte in line"}
	}
	if s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	} else if opts.Strict {
		return nil, &DumpError{Name: p.name, Line: strings.Count(s, "\n") + 1, Msg: "missing newline at end of the last line (strict mode)"}
	}
	if err := p.parseLines(s); err != nil {
		return nil, err
	}
	if p.paths != nil {
		p.root.Sort()
	}
	if err := p.resolveLinks(); err != nil {
		return nil, err
	}
	return p.root, nil
}

// parallelParseMin is the size from which a dump's two halves are parsed
// at the same time (a variable for tests).
var parallelParseMin = 1 << 20

// testParseLinesHook, if set, runs as parseLines starts (a test truncates a
// mapped dump there, after the checks that read it whole).
var testParseLinesHook func()

// parseLines parses s (lines without the last newline) into the tree.
//
// A large dump is parsed in two halves at the same time: the first half
// line by line into the tree, the second into entries that are put in the
// tree (place) once the first half is in, in order. Parsing a line is most
// of the work and needs nothing from other lines; placing it is what must
// go in order. The result, errors included, is that of parsing the lines
// one after the other (TestParseDumpHalves). 65k entries: 22 of 54 ms of
// mkcomposefs's work was parsing on one core.
func (p *dumpParser) parseLines(s string) error {
	if testParseLinesHook != nil {
		testParseLinesHook()
	}
	if len(s) >= parallelParseMin && runtime.GOMAXPROCS(0) > 1 {
		if i := strings.IndexByte(s[len(s)/2:], '\n'); i >= 0 {
			first, second := s[:len(s)/2+i], s[len(s)/2+i+1:]
			q := &dumpParser{opts: p.opts, name: p.name, line: p.line + strings.Count(first, "\n") + 1}
			var entries []dumpEntry
			var err error
			// inParallel: the dump may be mapped (mkcomposefs), and a
			// fault must reach the caller.
			inParallel(2, 1, func(half, _ int) {
				if half == 0 {
					err = p.eachLine(first, p.parseLine)
					return
				}
				entries = make([]dumpEntry, 0, strings.Count(second, "\n")+1)
				q.eachLine(second, func(line string) error {
					entries = append(entries, q.parseEntry(line))
					if e := &entries[len(entries)-1]; e.err != nil {
						return e.err
					}
					return nil
				})
			})
			if err != nil {
				return err
			}
			for i := range entries {
				if err := p.place(&entries[i]); err != nil {
					return err
				}
			}
			p.line = q.line
			return nil
		}
	}
	return p.eachLine(s, p.parseLine)
}

// eachLine calls f with each line of s (lines without the last newline),
// counting them in p.line, until f fails.
func (p *dumpParser) eachLine(s string, f func(line string) error) error {
	for {
		p.line++
		line, more := s, false
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s, more = s[:i], s[i+1:], true
		}
		if err := f(line); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

func (p *dumpParser) errorf(format string, args ...any) error {
	return &DumpError{Name: p.name, Line: p.line, Msg: fmt.Sprintf(format, args...)}
}

func (p *dumpParser) newNode() *tree.Node {
	if len(p.nodes) == 0 {
		p.nodes = make([]tree.Node, nodeSlabSize)
	}
	n := &p.nodes[0]
	p.nodes = p.nodes[1:]
	return n
}

// bytesOf returns a copy of s carved from the parser's arena.
func (p *dumpParser) bytesOf(s string) []byte {
	if len(s) > byteArenaChunk/8 {
		return []byte(s)
	}
	if len(p.arena) < len(s) {
		p.arena = make([]byte, byteArenaChunk)
	}
	b := p.arena[:len(s):len(s)]
	copy(b, s)
	p.arena = p.arena[len(s):]
	return b
}

func (p *dumpParser) alloc(n int) []byte {
	if n > byteArenaChunk/8 {
		return make([]byte, n)
	}
	if len(p.arena) < n {
		p.arena = make([]byte, byteArenaChunk)
	}
	b := p.arena[:n:n]
	p.arena = p.arena[n:]
	return b
}

// dumpEntry is a line of a dump parsed apart from its place in the tree.
type dumpEntry struct {
	path     string // unescaped
	n        *tree.Node
	mode     uint32
	hardlink bool
	link     string // a hardlink's target
	line     int
	// err is the line's error; with pre, it comes before the line's place
	// in the tree is checked (so it is the line's error whatever place
	// would say).
	err error
	pre bool
}

// parseLine parses a line and puts its entry in the tree.
func (p *dumpParser) parseLine(line string) error {
	e := p.parseEntry(line)
	return p.place(&e)
}

// place puts a parsed line's entry in the tree (addNode), or returns the
// line's error: the same as parsing and placing it in one go would.
func (p *dumpParser) place(e *dumpEntry) error {
	if e.err != nil && e.pre {
		return e.err
	}
	p.line = e.line
	if err := p.addNode(e.path, e.n, e.mode); err != nil {
		return err
	}
	if e.err != nil {
		return e.err
	}
	if e.hardlink {
		n := e.n
		*n = tree.Node{Name: n.Name, Parent: n.Parent}
		p.links = append(p.links, pendingLink{node: n, target: e.link, line: e.line})
	}
	return nil
}

// parseEntry parses a line into its entry, without putting it in the tree;
// a line that cannot be parsed has its error in the entry.
func (p *dumpParser) parseEntry(line string) (e dumpEntry) {
	e.line = p.line
	// Errors up to MODE come before the line's place in the tree is
	// checked (place), the others after it, as when a line was parsed and
	// placed in one go.
	e.pre = true
	fail := func(err error) dumpEntry {
		e.err = err
		return e
	}
	if line == "" {
		return fail(p.errorf("empty line"))
	}
	var f [numFixedFields]string
	rest := line
	nf := 0
	for nf < numFixedFields && rest != "" {
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			f[nf], rest = rest, ""
			nf++
			break
		}
		f[nf], rest = rest[:i], rest[i+1:]
		nf++
	}
	// A single trailing space ends the line with an empty field, which is
	// ignored; any other empty field is an error.
	for i := 0; i < nf; i++ {
		if f[i] == "" {
			return fail(p.errorf("empty %s field", fieldNames[i]))
		}
	}
	if nf < numMandatory {
		return fail(p.errorf("missing %s field (a line needs at least PATH SIZE MODE NLINK UID GID RDEV MTIME)", fieldNames[nf]))
	}
	for i := nf; i < numFixedFields; i++ {
		f[i] = "-"
	}
	if len(rest) > maxXattrsText {
		return fail(p.errorf("xattrs take %d bytes, more than %d", len(rest), maxXattrsText))
	}

	path, err := unescape(f[fieldPath])
	if err != nil {
		return fail(p.errorf("PATH: %v", err))
	}
	if strings.IndexByte(path, 0) >= 0 {
		return fail(p.errorf("PATH %q contains a NUL byte", path))
	}

	modeField := f[fieldMode]
	hardlink := modeField[0] == '@'
	if hardlink {
		modeField = modeField[1:]
	}
	mode64, ok := strtoull(modeField, 8)
	if !ok {
		return fail(p.errorf("MODE %q is not an octal number", f[fieldMode]))
	}
	mode := uint32(mode64)

	n := p.newNode()
	n.Mode = mode & 0xffff
	e.path, e.n, e.mode, e.pre = path, n, mode, false

	if hardlink {
		if mode&tree.TypeMask == tree.TypeDir {
			return fail(p.errorf("%s: a directory cannot be a hardlink", path))
		}
		target, err := unescapeOptional(f[fieldPayload])
		if err != nil {
			return fail(p.errorf("PAYLOAD: %v", err))
		}
		if target == "" {
			return fail(p.errorf("%s: hardlink without a target (PAYLOAD)", path))
		}
		e.hardlink, e.link = true, target
		return e
	}

	switch mode & tree.TypeMask {
	case tree.TypeReg, tree.TypeDir, tree.TypeLink, tree.TypeBlock, tree.TypeChar, tree.TypeSock, tree.TypeFifo:
	default:
		return fail(p.errorf("%s: MODE %s has no valid file type", path, f[fieldMode]))
	}

	size, ok := strtoull(f[fieldSize], 10)
	if !ok {
		return fail(p.errorf("SIZE %q is not a decimal number", f[fieldSize]))
	}
	nlink, ok := strtoull(f[fieldNlink], 10)
	if !ok {
		return fail(p.errorf("NLINK %q is not a decimal number", f[fieldNlink]))
	}
	uid, ok := strtoull(f[fieldUID], 10)
	if !ok {
		return fail(p.errorf("UID %q is not a decimal number", f[fieldUID]))
	}
	gid, ok := strtoull(f[fieldGID], 10)
	if !ok {
		return fail(p.errorf("GID %q is not a decimal number", f[fieldGID]))
	}
	rdev, ok := strtoull(f[fieldRdev], 10)
	if !ok {
		return fail(p.errorf("RDEV %q is not a decimal number", f[fieldRdev]))
	}
	mtime, ok := parseMtime(f[fieldMtime])
	if !ok {
		return fail(p.errorf("MTIME %q is not SEC.NSEC", f[fieldMtime]))
	}
	payload, err := unescapeOptional(f[fieldPayload])
	if err != nil {
		return fail(p.errorf("PAYLOAD: %v", err))
	}
	var content string
	hasContent := f[fieldContent] != "-"
	if hasContent {
		if content, err = unescape(f[fieldContent]); err != nil {
			return fail(p.errorf("CONTENT: %v", err))
		}
		if uint64(len(content)) != size {
			return fail(p.errorf("%s: CONTENT has %d bytes, SIZE says %d", path, len(content), size))
		}
		if len(content) > maxInlineContent {
			return fail(p.errorf("%s: CONTENT has %d bytes, more than %d", path, len(content), maxInlineContent))
		}
	}
	digestText, err := unescapeOptional(f[fieldDigest])
	if err != nil {
		return fail(p.errorf("DIGEST: %v", err))
	}

	n.UID, n.GID, n.Nlink = uint32(uid), uint32(gid), uint32(nlink)
	n.Mtime = mtime
	typ := mode & tree.TypeMask
	if p.opts.Strict && rdev != 0 && typ != tree.TypeChar && typ != tree.TypeBlock {
		return fail(p.errorf("%s: RDEV %d on a file that is not a device (strict mode)", path, rdev))
	}
	switch typ {
	case tree.TypeDir:
		n.Size = size
	case tree.TypeReg:
		n.Size = size
		switch {
		case hasContent:
			n.Content = p.bytesOf(content)
		case size > 0:
			if size > maxExternalSize {
				return fail(p.errorf("%s: SIZE %d is too large for an external file (more than 2^53 bytes): file too big", path, size))
			}
			if strings.IndexByte(payload, 0) >= 0 {
				return fail(p.errorf("%s: PAYLOAD contains a NUL byte", path))
			}
			n.Payload = payload
			if digestText != "" {
				d := p.alloc(digestSize)
				if !decodeHexDigest(d, digestText) {
					return fail(p.errorf("%s: DIGEST %q is not %d hex digits", path, digestText, digestHexLen))
				}
				n.Digest = d
			}
		}
	case tree.TypeLink:
		if payload == "" {
			return fail(p.errorf("%s: symlink without a target (PAYLOAD)", path))
		}
		if len(payload) > maxSymlinkLen {
			return fail(p.errorf("%s: symlink target of %d bytes, at most %d allowed", path, len(payload), maxSymlinkLen))
		}
		if strings.IndexByte(payload, 0) >= 0 {
			return fail(p.errorf("%s: symlink target contains a NUL byte", path))
		}
		if p.opts.Strict {
			if size != uint64(len(payload)) {
				return fail(p.errorf("%s: symlink SIZE %d differs from the target's length %d (strict mode)", path, size, len(payload)))
			}
			if hasContent {
				return fail(p.errorf("%s: CONTENT on a symlink (strict mode)", path))
			}
		}
		n.Target = payload
		n.Size = uint64(len(payload))
	case tree.TypeChar, tree.TypeBlock:
		n.Rdev = uint32(rdev)
	}

	if rest != "" {
		if err := p.parseXattrs(n, path, rest); err != nil {
			return fail(err)
		}
	}
	return e
}

// addNode links n into the tree at path (unescaped). The part after the
// last '/' is the name; the part before names the parent, with empty
// components skipped and "." and ".." never resolved.
func (p *dumpParser) addNode(path string, n *tree.Node, mode uint32) error {
	if path == "/" {
		if p.root != nil {
			return p.errorf("a second root directory")
		}
		if mode&tree.TypeMask != tree.TypeDir {
			return p.errorf("the root must be a directory, MODE is %o", mode)
		}
		p.root = n
		p.dirs[""] = n
		return nil
	}
	if p.root == nil {
		return p.errorf("%s: the first line must be the root directory \"/\"", path)
	}
	slash := strings.LastIndexByte(path, '/')
	name := path[slash+1:]
	switch {
	case name == "":
		return p.errorf("%s: empty file name", path)
	case name == "." || name == "..":
		return p.errorf("%s: file name %q is not allowed", path, name)
	case len(name) > maxNameLen:
		return p.errorf("%s: file name of %d bytes, at most %d allowed", path, len(name), maxNameLen)
	}
	parentKey := ""
	if slash > 0 {
		parentKey = canonicalPath(path[:slash])
	}
	parent := p.lastParent
	if parent == nil || parentKey != p.lastParentKey {
		parent = p.dirs[parentKey]
		if parent == nil {
			if p.lookupSlow(parentKey) != nil {
				return p.errorf("%s: parent is not a directory", path)
			}
			return p.errorf("%s: parent directory missing", path)
		}
		p.lastParentKey, p.lastParent = parentKey, parent
	}
	var key string
	switch {
	case parentKey == "":
		key = name
	case path[0] == '/' && len(parentKey) == slash-1:
		key = path[1:] // already canonical: a substring of the dump
	default:
		key = parentKey + "/" + name
		name = key[len(parentKey)+1:]
	}
	if p.paths == nil {
		if kids := parent.Children; len(kids) > 0 && kids[len(kids)-1].Name >= name {
			p.buildPaths()
		}
	}
	if p.paths != nil {
		if _, dup := p.paths[key]; dup {
			return p.errorf("%s: duplicate path", path)
		}
		p.paths[key] = n
	}
	if mode&tree.TypeMask == tree.TypeDir {
		p.dirs[key] = n
	}
	n.Name = name
	parent.AddChild(n)
	return nil
}

// buildPaths maps every path added so far (see dumpParser.dirs).
func (p *dumpParser) buildPaths() {
	p.paths = make(map[string]*tree.Node)
	var walk func(n *tree.Node, key string)
	walk = func(n *tree.Node, key string) {
		p.paths[key] = n
		for _, c := range n.Children {
			if key == "" {
				walk(c, c.Name)
			} else {
				walk(c, key+"/"+c.Name)
			}
		}
	}
	walk(p.root, "")
}

// lookupSlow finds the node at a canonical path by scanning children (for
// error messages).
func (p *dumpParser) lookupSlow(key string) *tree.Node {
	cur := p.root
	for comp := range strings.SplitSeq(key, "/") {
		var next *tree.Node
		for _, c := range cur.Children {
			if c.Name == comp {
				next = c
			}
		}
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}

// canonicalPath drops empty components and the leading '/' of an
// unescaped dump path: "/d//a" → "d/a". It allocates only when needed.
func canonicalPath(s string) string {
	for len(s) > 0 && s[0] == '/' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	if !strings.Contains(s, "//") {
		return s
	}
	var b strings.Builder
	for comp := range strings.SplitSeq(s, "/") {
		if comp == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(comp)
	}
	return b.String()
}

func (p *dumpParser) parseXattrs(n *tree.Node, path, rest string) error {
	xs := p.xbuf[:0]
	for rest != "" {
		var field string
		if i := strings.IndexByte(rest, ' '); i >= 0 {
			field, rest = rest[:i], rest[i+1:]
		} else {
			field, rest = rest, ""
		}
		if field == "" {
			return p.errorf("%s: empty xattr field (two spaces in a row)", path)
		}
		// mkcomposefs refuses "Missing = in xattr"; an xattr with an empty
		// value is written "user.x=".
		rawKey, rawValue, ok := strings.Cut(field, "=")
		if !ok {
			return p.errorf("%s: xattr %q has no '=': missing = in xattr (KEY=VALUE; an empty value is KEY=)", path, field)
		}
		key, err := unescape(rawKey)
		if err != nil {
			return p.errorf("%s: xattr name: %v", path, err)
		}
		switch {
		case key == "":
			return p.errorf("%s: empty xattr name in %q", path, field)
		case len(key) > maxXattrNameLen:
			return p.errorf("%s: xattr name of %d bytes, at most %d allowed", path, len(key), maxXattrNameLen)
		case strings.IndexByte(key, 0) >= 0:
			return p.errorf("%s: xattr name %q contains a NUL byte", path, key)
		}
		value, err := unescape(rawValue)
		if err != nil {
			return p.errorf("%s: xattr %s value: %v", path, key, err)
		}
		if len(value) > maxXattrValueLen {
			return p.errorf("%s: xattr %s value of %d bytes, at most %d allowed", path, key, len(value), maxXattrValueLen)
		}
		xs = append(xs, tree.Xattr{Name: key, Value: p.bytesOf(value)})
	}
	// Sort by name, a later value for the same name replacing an earlier one.
	sortXattrsStable(xs)
	out := xs[:0]
	for i, x := range xs {
		if i+1 < len(xs) && xs[i+1].Name == x.Name {
			continue
		}
		out = append(out, x)
	}
	budget := 12
	for _, x := range out {
		budget += 7 + len(x.Name) + len(x.Value)
	}
	if budget > maxXattrBudget {
		return p.errorf("%s: xattrs need %d bytes, more than the %d an inode can hold", path, budget, maxXattrBudget)
	}
	n.Xattrs = append(make([]tree.Xattr, 0, len(out)), out...)
	p.xbuf = xs[:0]
	return nil
}

// sortXattrsStable sorts by name keeping dump order among equal names
// (insertion sort: lines usually carry few xattrs).
func sortXattrsStable(xs []tree.Xattr) {
	if len(xs) > 16 {
		slices.SortStableFunc(xs, func(a, b tree.Xattr) int { return strings.Compare(a.Name, b.Name) })
		return
	}
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j-1].Name > xs[j].Name; j-- {
			xs[j-1], xs[j] = xs[j], xs[j-1]
		}
	}
}

func (p *dumpParser) resolveLinks() error {
	links := p.links
	for i := range links {
		l := &links[i]
		// Children are sorted by now; pending links have no type, so
		// Lookup does not walk through them.
		target := p.root.Lookup(l.target)
		if target == nil {
			return &DumpError{Name: p.name, Line: l.line, Msg: fmt.Sprintf("%s: hardlink target %s does not exist", l.node.Path(), l.target)}
		}
		l.node.LinkTo = target
	}
	// A link whose target is itself a link refers to that link's inode.
	for i := range links {
		l := &links[i]
		t := l.node.LinkTo
		for steps := 0; t.LinkTo != nil && t != l.node && steps <= len(links); steps++ {
			t = t.LinkTo
		}
		switch {
		case t == l.node:
			return &DumpError{Name: p.name, Line: l.line, Msg: fmt.Sprintf("%s: hardlink to itself (target %s)", l.node.Path(), l.target)}
		case t.LinkTo != nil:
			return &DumpError{Name: p.name, Line: l.line, Msg: fmt.Sprintf("%s: hardlink cycle (target %s)", l.node.Path(), l.target)}
		case t.Mode&tree.TypeMask == tree.TypeDir:
			return &DumpError{Name: p.name, Line: l.line, Msg: fmt.Sprintf("%s: hardlink to a directory (%s)", l.node.Path(), l.target)}
		}
		l.node.LinkTo = t
	}
	return nil
}

// strtoull parses s like C's strtoull(s, &end, base) (base 8 or 10) followed by a check
// that s is non-empty and fully consumed: optional leading whitespace and
// sign, at least one digit; a negative value wraps modulo 2^64 and overflow
// saturates to 2^64-1.
func strtoull(s string, base uint64) (uint64, bool) {
	i := 0
	for i < len(s) && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var v uint64
	overflow := false
	// v*base+d overflows exactly when v > cutoff, or v == cutoff and d > cutlim.
	cutoff, cutlim := uint64(math.MaxUint64/10), uint64(math.MaxUint64%10)
	if base == 8 {
		cutoff, cutlim = math.MaxUint64/8, math.MaxUint64%8
	}
	for ; i < len(s); i++ {
		d := uint64(s[i] - '0')
		if d >= base {
			break
		}
		if v > cutoff || (v == cutoff && d > cutlim) {
			overflow = true
		}
		v = v*base + d
	}
	if i == start || i != len(s) {
		return 0, false
	}
	if overflow {
		return ^uint64(0), true
	}
	if neg {
		v = -v
	}
	return v, true
}

// parseMtime parses SEC.NSEC: two C strtoull numbers split at the first '.'.
func parseMtime(s string) (tree.Timespec, bool) {
	secText, nsecText, _ := strings.Cut(s, ".")
	sec, ok := strtoull(secText, 10)
	if !ok {
		return tree.Timespec{}, false
	}
	nsec, ok := strtoull(nsecText, 10)
	if !ok {
		return tree.Timespec{}, false
	}
	return tree.Timespec{Sec: int64(sec), Nsec: uint32(nsec)}, true
}

var errEscape = errors.New("bad escape")

// unescape decodes the dump escapes \\ \n \r \t \xHH. It returns s itself
// when s has no backslash.
func unescape(s string) (string, error) {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		at := i
		i++
		if i >= len(s) {
			return "", fmt.Errorf("%w: no character after \\ at the end", errEscape)
		}
		switch s[i] {
		case '\\':
			b = append(b, '\\')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'x':
			if i+2 >= len(s) {
				return "", fmt.Errorf("%w: \\x needs two hex digits (byte %d)", errEscape, at)
			}
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: %q is not hex (byte %d)", errEscape, s[at:i+3], at)
			}
			b = append(b, byte(hi<<4|lo))
			i += 2
		default:
			return "", fmt.Errorf("%w: unsupported escape %q (byte %d)", errEscape, s[at:i+1], at)
		}
	}
	return string(b), nil
}

// unescapeOptional is unescape, with "-" meaning absent ("").
func unescapeOptional(s string) (string, error) {
	if s == "-" {
		return "", nil
	}
	return unescape(s)
}

func unhex(c byte) int { return int(hexValues[c]) }

// hexValues maps a byte to its hex digit value, or -1.
var hexValues = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c-'a') + 10
		t[c-'a'+'A'] = int8(c-'a') + 10
	}
	return t
}()

// decodeHexDigest decodes exactly len(dst)*2 hex digits of either case.
func decodeHexDigest(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi < 0 || lo < 0 {
			return false
		}
		dst[i] = byte(hi<<4 | lo)
	}
	return true
}
