package state

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/layer"
	"github.com/mossfs/mossfs/internal/sandbox"
	"github.com/mossfs/mossfs/internal/triggers"
	"github.com/mossfs/mossfs/tree"
)

// DefaultTriggerTimeout is how long one trigger handler may run.
const DefaultTriggerTimeout = 10 * time.Minute

// TriggerPath is the PATH handlers run with.
const TriggerPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// TriggerOptions control the transaction triggers of a compose.
type TriggerOptions struct {
	// Skip runs no trigger (and records none).
	Skip bool
	// Rerun runs every hit trigger, even those whose inputs are unchanged
	// since the parent transaction.
	Rerun bool
	// Timeout per handler (0: DefaultTriggerTimeout).
	Timeout time.Duration
	// Exe is the program re-executed as container init (default: this
	// one); it must call sandbox.Init first thing.
	Exe string
	// Warn receives warnings: trigger files that do not parse, handlers
	// that exit non-zero (with their output). nil: standard error.
	Warn func(msg string)
}

// TriggerRecord is what a transaction records about one transaction
// trigger that its tree hit.
type TriggerRecord struct {
	Name string `json:"name"`
	// Key is the SHA-256 of the trigger's inputs: its definition, the
	// substituted commands, every matched path and everything beneath
	// matched directories, the handler programs, and the outputs of the
	// triggers it runs after.
	Key string `json:"key"`
	// Ran is false when the outputs were carried over from the parent
	// transaction (same key there).
	Ran      bool     `json:"ran"`
	Commands []string `json:"commands"`
	// Fragment (file under <id>.inputs/) and Digest hold the trigger's
	// output layer as a composefs dump: whiteouts are char 0/0 entries.
	Fragment string `json:"fragment"`
	Digest   string `json:"digest"`
	// Paths the trigger produced and Removed paths it deleted (/usr/...).
	Paths    []string `json:"paths,omitempty"`
	Removed  []string `json:"removed,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// triggerStep is the outcome of the trigger step of a compose.
type triggerStep struct {
	records []TriggerRecord
	pending []pendingFragment
	// stored tells that new objects went into the store (a syncfs is due).
	stored bool
}

// fragmentInputs returns pseudo inputs naming the trigger fragments, so
// that writeInputs writes (or links) them beside the input fragments.
func (st *triggerStep) fragmentInputs() []Input {
	out := make([]Input, len(st.records))
	for i, r := range st.records {
		out[i] = Input{Fragment: r.Fragment}
	}
	return out
}

type triggerRun struct {
	run     *triggers.Run
	key     string
	layer   *tree.Node
	data    []byte // the encoded layer
	rec     TriggerRecord
	carried string // fragment path in the parent to link
	index   int    // place in the plan
	done    chan struct{}
	err     error
}

// applyTriggers runs the transaction triggers of the composed tree root
// (an image tree: its root is /usr) and folds their outputs into it. base
// is the parent transaction (nil: none), when the transaction's time.
func (s *State) applyTriggers(root *tree.Node, base *Transaction, when time.Time, opts TriggerOptions) (*triggerStep, error) {
	step := &triggerStep{}
	if opts.Skip {
		return step, nil
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(m string) { fmt.Fprintln(os.Stderr, "moss-compose: warning:", m) }
	}
	files, err := s.triggerFiles(root)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return step, nil
	}
	trigs, skipped := triggers.LoadFiles(files, triggers.Transaction)
	for _, e := range skipped {
		warn(fmt.Sprintf("/%s/%s skipped (moss skips it too): %v", triggers.Dir, e.File, e.Err))
	}
	coll, err := triggers.NewCollection(trigs)
	if err != nil {
		return nil, fmt.Errorf("transaction triggers: %w", err)
	}
	coll.Add("/")
	_ = root.Walk(func(n *tree.Node) error {
		coll.Add(usrPath(n))
		return nil
	})
	plan := coll.Plan()
	if len(plan) == 0 {
		return step, nil
	}

	parent := map[string]TriggerRecord{}
	if base != nil {
		for _, r := range base.Triggers {
			parent[r.Name] = r
		}
	}
	runs := make([]*triggerRun, len(plan))
	byName := map[string]*triggerRun{}
	for i, r := range plan {
		runs[i] = &triggerRun{run: r, index: i, done: make(chan struct{})}
		byName[r.Name] = runs[i]
	}
	tx := &txTriggers{s: s, root: root, when: when, opts: opts, byName: byName}
	if tx.opts.Timeout <= 0 {
		tx.opts.Timeout = DefaultTriggerTimeout
	}
	defer tx.cleanup()

	sem := make(chan struct{}, max(1, runtime.NumCPU()))
	var wg sync.WaitGroup
	for _, tr := range runs {
		wg.Go(func() {
			defer close(tr.done)
			for _, d := range tr.run.Deps {
				dep := byName[d]
				<-dep.done
				if dep.err != nil {
					tr.err = fmt.Errorf("trigger %s: not run: %s failed", tr.run.Name, d)
					return
				}
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			tr.err = tx.do(tr, parent[tr.run.Name], base)
		})
	}
	wg.Wait()
	var errs []error
	for _, tr := range runs {
		if tr.err != nil {
			errs = append(errs, tr.err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("transaction triggers: %w", err)
	}
	if err := checkClaims(runs); err != nil {
		return nil, fmt.Errorf("transaction triggers: %w", err)
	}
	// Fold, in DAG order, stamping what the triggers made with the
	// transaction's time (SOURCE_DATE_EPOCH).
	stamp := func(n *tree.Node) { n.Mtime = tree.Timespec{Sec: when.Unix()} }
	for _, tr := range runs {
		if tr.rec.Ran {
			step.stored = true
		}
		for _, w := range tr.rec.Warnings {
			warn(w)
		}
		layer.Apply(root, tr.layer, stamp)
		step.records = append(step.records, tr.rec)
		step.pending = append(step.pending, pendingFragment{data: tr.data, linkFrom: tr.carried})
	}
	root.Sort()
	return step, nil
}

// usrPath is a tree node's path as moss sees it (the image is /usr).
func usrPath(n *tree.Node) string {
	if n.Parent == nil {
		return "/usr"
	}
	return "/usr" + n.Path()
}

// triggerFiles reads the regular files under usr/share/moss/triggers of
// the tree, by path relative to that directory.
func (s *State) triggerFiles(root *tree.Node) (map[string][]byte, error) {
	dir := lookupPath(root, strings.TrimPrefix(triggers.Dir, "usr/"))
	if dir == nil || !dir.IsDir() {
		return nil, nil
	}
	files := map[string][]byte{}
	var names []string
	_ = dir.Walk(func(n *tree.Node) error {
		if n.Inode().Mode&tree.TypeMask == tree.TypeReg {
			names = append(names, strings.TrimPrefix(n.Path(), dir.Path()+"/"))
		}
		return nil
	})
	for _, name := range triggers.Select(names, triggers.Transaction) {
		if strings.HasSuffix(name, ".kdl") {
			files[name] = nil
			continue
		}
		data, err := s.nodeContent(lookupPath(dir, name))
		if err != nil {
			return nil, fmt.Errorf("trigger file /%s/%s: %w", triggers.Dir, name, err)
		}
		files[name] = data
	}
	return files, nil
}

// nodeContent reads a regular file of a tree: inline, or from the store.
func (s *State) nodeContent(n *tree.Node) ([]byte, error) {
	in := n.Inode()
	if in.Payload == "" {
		return in.Content, nil
	}
	const maxTrigger = 1 << 20
	if in.Size > maxTrigger {
		return nil, fmt.Errorf("%d bytes: too big for a trigger file", in.Size)
	}
	r, err := os.OpenInRoot(s.store.ObjectsDir(), in.Payload)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := make([]byte, in.Size)
	if _, err := r.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	return buf, nil
}

// lookupPath finds a relative path below n (no symlinks followed).
func lookupPath(n *tree.Node, p string) *tree.Node {
	for name := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
		if name == "" {
			continue
		}
		if !n.IsDir() {
			return nil
		}
		var next *tree.Node
		for _, c := range n.Children {
			if c.Name == name {
				next = c
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// resolveProgram finds a handler's program in the tree, following symlinks
// inside it; "" with nil when it is not there.
func resolveProgram(root *tree.Node, run string) *tree.Node {
	var candidates []string
	if strings.Contains(run, "/") {
		candidates = []string{run}
	} else {
		for _, d := range strings.Split(TriggerPath, ":") {
			candidates = append(candidates, d+"/"+run)
		}
	}
	for _, c := range candidates {
		if n := resolveAbs(root, c, 0); n != nil {
			return n
		}
	}
	return nil
}

// resolveAbs resolves an absolute path of the container (/usr/... or the
// /bin, /sbin, /lib* links into usr) in the image tree.
func resolveAbs(root *tree.Node, p string, depth int) *tree.Node {
	if depth > 40 {
		return nil
	}
	p = path.Clean(p)
	rel, ok := strings.CutPrefix(p, "/usr/")
	if !ok {
		first, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
		switch first {
		case "bin", "sbin", "lib", "lib64", "lib32":
			rel = first + "/" + rest
		default:
			return nil
		}
	}
	n := root
	parts := strings.Split(rel, "/")
	for i, name := range parts {
		if name == "" {
			continue
		}
		next := lookupPath(n, name)
		if next == nil {
			return nil
		}
		if next.Inode().Mode&tree.TypeMask == tree.TypeLink {
			t := next.Inode().Target
			if !strings.HasPrefix(t, "/") {
				t = path.Join(usrPath(n), t)
			}
			return resolveAbs(root, path.Join(append([]string{t}, parts[i+1:]...)...), depth+1)
		}
		n = next
	}
	return n
}

// triggerKey hashes everything a trigger's outputs depend on.
func triggerKey(root *tree.Node, r *triggers.Run, depDigests []string) string {
	h := sha256.New()
	field := func(b []byte) {
		var l [8]byte
		binary.LittleEndian.PutUint64(l[:], uint64(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	field([]byte("mossfs transaction trigger inputs v1"))
	field([]byte(r.Name))
	for _, d := range r.Definitions {
		field([]byte(d.File))
		field(d.Source)
	}
	for _, c := range r.Commands {
		field([]byte(c.String()))
		for _, a := range c.Args {
			field([]byte(a))
		}
		if prog := resolveProgram(root, c.Run); prog != nil {
			field([]byte("program"))
			entryHash(field, prog)
		} else {
			field([]byte("no program"))
		}
	}
	// Matched paths and everything beneath matched directories.
	seen := map[*tree.Node]bool{}
	var nodes []*tree.Node
	for _, p := range r.Paths {
		n := root
		if p != "/usr" && p != "/" {
			n = lookupPath(root, strings.TrimPrefix(p, "/usr/"))
		}
		if p == "/" || n == nil {
			field([]byte("path " + p))
			continue
		}
		_ = n.Walk(func(x *tree.Node) error {
			if seen[x] {
				return tree.ErrSkipDir
			}
			seen[x] = true
			nodes = append(nodes, x)
			return nil
		})
	}
	slices.SortFunc(nodes, func(a, b *tree.Node) int { return strings.Compare(a.Path(), b.Path()) })
	for _, n := range nodes {
		field([]byte(n.Path()))
		entryHash(field, n)
	}
	for _, d := range depDigests {
		field([]byte(d))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// entryHash feeds one entry's metadata and content identity.
func entryHash(field func([]byte), n *tree.Node) {
	in := n.Inode()
	var b [36]byte
	binary.LittleEndian.PutUint32(b[0:], in.Mode)
	binary.LittleEndian.PutUint32(b[4:], in.UID)
	binary.LittleEndian.PutUint32(b[8:], in.GID)
	binary.LittleEndian.PutUint32(b[12:], in.Rdev)
	binary.LittleEndian.PutUint64(b[16:], in.Size)
	binary.LittleEndian.PutUint64(b[24:], uint64(in.Mtime.Sec))
	binary.LittleEndian.PutUint32(b[32:], in.Mtime.Nsec)
	field(b[:])
	field([]byte(in.Target))
	field(in.Content)
	field([]byte(in.Payload))
	field(in.Digest)
	for _, x := range in.Xattrs {
		field([]byte(x.Name))
		field(x.Value)
	}
}

// txTriggers is the state of one compose's trigger step.
type txTriggers struct {
	s      *State
	root   *tree.Node
	when   time.Time
	opts   TriggerOptions
	byName map[string]*triggerRun

	mu      sync.Mutex
	scratch string
	baseImg string
}

func (t *txTriggers) cleanup() {
	if t.scratch != "" {
		os.RemoveAll(t.scratch)
	}
}

// scratchDir returns the compose's scratch directory (under transactions/,
// as .tmp-*, so that gc removes it after a crash).
func (t *txTriggers) scratchDir() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.scratch == "" {
		d, err := os.MkdirTemp(t.s.txDir(), ".tmp-triggers-")
		if err != nil {
			return "", err
		}
		t.scratch = d
	}
	return t.scratch, nil
}

// image writes the image of a view (the composed tree, plus the outputs of
// the triggers a run follows) for a container's /usr.
func (t *txTriggers) image(name string, deps []*triggerRun) (string, error) {
	dir, err := t.scratchDir()
	if err != nil {
		return "", err
	}
	if len(deps) == 0 {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.baseImg != "" {
			return t.baseImg, nil
		}
	}
	view := t.root
	if len(deps) > 0 {
		var layers []*tree.Node
		for _, d := range deps {
			layers = append(layers, d.layer)
		}
		lookup := layer.View(t.root, layers)
		view = lookup("/")
	}
	img, err := erofs.BuildImage(view, erofs.DefaultWriteOptions())
	if err != nil {
		return "", fmt.Errorf("image for trigger %s: %w", name, err)
	}
	p := filepath.Join(dir, "image-"+name)
	if len(deps) == 0 {
		p = filepath.Join(dir, "image")
	}
	if err := os.WriteFile(p, img, 0o644); err != nil {
		return "", err
	}
	if len(deps) == 0 {
		t.baseImg = p
	}
	return p, nil
}

// do runs (or carries over) one trigger.
func (t *txTriggers) do(tr *triggerRun, prev TriggerRecord, base *Transaction) error {
	r := tr.run
	var deps []*triggerRun
	var depDigests []string
	// Deps in plan order, so the view stacks them in DAG order.
	for _, d := range r.Deps {
		deps = append(deps, t.byName[d])
	}
	slices.SortFunc(deps, func(a, b *triggerRun) int { return strings.Compare(a.rec.Name, b.rec.Name) })
	for _, d := range deps {
		depDigests = append(depDigests, d.rec.Name+"="+d.rec.Digest)
	}
	tr.key = triggerKey(t.root, r, depDigests)
	tr.rec = TriggerRecord{Name: r.Name, Key: tr.key}
	for _, c := range r.Commands {
		tr.rec.Commands = append(tr.rec.Commands, c.String())
	}
	if !t.opts.Rerun && base != nil && prev.Key == tr.key && prev.Fragment != "" {
		in := Input{Kind: "trigger", Name: r.Name, Fragment: prev.Fragment, Digest: prev.Digest}
		data, l, err := t.s.loadFragment(base, in, true)
		if err == nil {
			tr.layer, tr.data, tr.carried = l, data, t.s.FragmentPath(base, in)
			tr.rec.Fragment, tr.rec.Digest = prev.Fragment, prev.Digest
			tr.rec.Paths, tr.rec.Removed = prev.Paths, prev.Removed
			return nil
		}
		// An unreadable parent fragment: run it again.
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("trigger %s must run, and triggers run in containers as root: compose as root, or with --skip-triggers", r.Name)
	}
	for _, c := range r.Commands {
		if c.IsDelete {
			return fmt.Errorf("trigger %s: delete handlers are not supported (moss cannot run them either)", r.Name)
		}
	}
	// The container's /usr: the view with the dependencies' outputs.
	ordered := slices.Clone(deps)
	slices.SortFunc(ordered, func(a, b *triggerRun) int { return a.index - b.index })
	img, err := t.image(r.Name, ordered)
	if err != nil {
		return err
	}
	dir, err := t.scratchDir()
	if err != nil {
		return err
	}
	work := filepath.Join(dir, "run-"+r.Name)
	upper, wdir := filepath.Join(work, "upper"), filepath.Join(work, "work")
	for _, d := range []string{upper, wdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	env := []string{"PATH=" + TriggerPath, "LANG=C.UTF-8", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(t.when.Unix(), 10)}
	for i, c := range r.Commands {
		res, err := sandbox.Run(context.Background(), sandbox.Spec{
			Image: img, Objects: t.s.store.ObjectsDir(), Upper: upper, Work: wdir,
			Scratch: filepath.Join(work, "mnt"+strconv.Itoa(i)),
			Run:     c.Run, Args: c.Args, Env: env, Timeout: t.opts.Timeout, Exe: t.opts.Exe,
		})
		if err != nil {
			return fmt.Errorf("trigger %s: %s: %w", r.Name, c, err)
		}
		switch res.Outcome {
		case sandbox.NoStart:
			return fmt.Errorf("trigger %s: %s: cannot start: %s", r.Name, c, res.Err)
		case sandbox.TimedOut:
			return fmt.Errorf("trigger %s: %s: still running after %v: killed", r.Name, c, t.opts.Timeout)
		case sandbox.Signaled:
			tr.rec.Warnings = append(tr.rec.Warnings, fmt.Sprintf("trigger %s: %s: killed by signal %s: %s", r.Name, c, res.Signal, strings.TrimSpace(string(res.Output))))
		case sandbox.Exited:
			if res.Code != 0 {
				tr.rec.Warnings = append(tr.rec.Warnings, fmt.Sprintf("trigger %s: %s: exit status %d: %s", r.Name, c, res.Code, strings.TrimSpace(string(res.Output))))
			}
		}
	}
	up, err := dirimport.Import(context.Background(), upper, dirimport.Options{Sink: t.s.store})
	if err != nil {
		return fmt.Errorf("trigger %s: reading its outputs: %w", r.Name, err)
	}
	var lowers []*tree.Node
	for _, d := range ordered {
		lowers = append(lowers, d.layer)
	}
	l, err := layer.FromUpper(up, layer.View(t.root, lowers))
	if err != nil {
		return fmt.Errorf("trigger %s: %w", r.Name, err)
	}
	l.Sort()
	data, err := EncodeFragment(l)
	if err != nil {
		return fmt.Errorf("trigger %s: %w", r.Name, err)
	}
	tr.layer, tr.data = l, data
	tr.rec.Ran = true
	tr.rec.Fragment, tr.rec.Digest = fragmentName(data)
	for _, e := range layer.Entries(l) {
		if e.Deleted {
			tr.rec.Removed = append(tr.rec.Removed, "/usr"+e.Path)
		} else {
			tr.rec.Paths = append(tr.rec.Paths, "/usr"+e.Path)
		}
	}
	return nil
}

// checkClaims refuses two triggers producing or deleting the same path (or
// one replacing a directory the other writes into).
func checkClaims(runs []*triggerRun) error {
	owner := map[string]string{}
	var paths []string
	for _, tr := range runs {
		for _, e := range layer.Entries(tr.layer) {
			if o, ok := owner[e.Path]; ok && o != tr.run.Name {
				return fmt.Errorf("triggers %s and %s both write /usr%s", o, tr.run.Name, e.Path)
			}
			owner[e.Path] = tr.run.Name
			paths = append(paths, e.Path)
		}
	}
	for _, p := range paths {
		for a := path.Dir(p); a != "/"; a = path.Dir(a) {
			if o, ok := owner[a]; ok && o != owner[p] {
				return fmt.Errorf("triggers %s and %s both write /usr%s (%s replaces it, %s writes /usr%s)", o, owner[p], a, o, owner[p], p)
			}
		}
	}
	return nil
}
