// Package triggers reads moss trigger definitions and decides which handlers
// run, in which order, with moss's semantics (AerynOS os-tools, crates
// triggers, fnmatch and dag). It runs nothing itself: the transaction scope
// (compose, in a container per handler) and the system scope (after a
// switch, on the host) each execute the plan their own way.
//
// # Use
//
//	trigs, skipped := triggers.Load(os.DirFS("/usr/share/moss/triggers"), triggers.System)
//	for _, err := range skipped { warn(err) }   // moss skips such files silently
//	c, err := triggers.NewCollection(trigs)   // fails on a path naming a missing handler
//	for _, p := range paths { c.Add(p) }       // every path of the tree: "/", "/usr", "/usr/..."
//	for _, run := range c.Plan() {             // in moss's order
//		for _, cmd := range run.Commands { exec(cmd.Run, cmd.Args...) }
//	}
//
// Plan's order is exactly moss's: a DAG over the hit triggers' names
// (before: B adds self→B, after: A adds A→self, only when the other trigger
// is loaded in the same scope, edges closing a cycle dropped), walked the
// way petgraph's Topo walks it: unconstrained triggers come out in reverse
// alphabetical order. Run.Deps gives the hit triggers a run must follow
// (through the DAG, transitively), so that independent runs may go in
// parallel.
//
// # Format (YAML, as moss's serde structs)
//
//	name: depmod                       # required; DAG node and before/after key
//	description: ...                   # required
//	before: other / after: other       # optional, one name each
//	inhibitors: {paths: [], environment: []}   # optional, both lists required; moss never checks them
//	handlers:                          # required: name → {run: CMD, args: [..]} (args required)
//	  depmod: {run: /usr/sbin/depmod, args: [-a, $(version)]}   # or {delete: [..]}
//	paths:                             # required: pattern → {handlers: [..], type: directory|symlink}
//	  "/usr/lib/modules/(version:*)/*": {handlers: [depmod], type: directory}
//
// Unknown keys are ignored; "type" is checked and then ignored, as moss does.
// Patterns: see Pattern. $(name) in run and args is replaced by the capture
// by plain string replacement (captures in name order; unknown ones stay).
// moss loads <scope>.yaml, <scope>.kdl and <scope>.d/*.{yaml,kdl} under
// usr/share/moss/triggers; a .kdl file shadows the .yaml of the same name.
// KDL is not read here: such a file is reported and skipped.
package triggers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Scope is a trigger scope: the file name stem moss loads.
type Scope string

const (
	// Transaction triggers run while a transaction is built; their output
	// is part of the transaction's /usr.
	Transaction Scope = "tx"
	// System triggers run on the system after the new /usr is live.
	System Scope = "sys"
)

// Dir is where trigger files live, relative to the root of a system.
const Dir = "usr/share/moss/triggers"

// Trigger is one parsed trigger file.
type Trigger struct {
	// File is the file the trigger came from (relative to the trigger dir).
	File        string
	Name        string
	Description string
	Before      string // "" = none
	After       string // "" = none
	Inhibitors  *Inhibitors
	Handlers    map[string]Handler
	// Paths in moss's order (by pattern text).
	Paths []PathRule
	// Source is the file's bytes (a part of a trigger's definition).
	Source []byte
}

// Inhibitors are parsed as moss does and, as in moss, never acted on.
type Inhibitors struct {
	Paths       []string
	Environment []string
}

// PathRule maps a pattern to handlers.
type PathRule struct {
	Pattern  *Pattern
	Handlers []string
	// Type is "", "directory" or "symlink"; moss ignores it when matching.
	Type string
}

// Handler is a run handler (Run, Args) or a delete handler (Delete set).
type Handler struct {
	Run    string
	Args   []string
	Delete []string
	// IsDelete tells a delete handler, which moss parses but cannot run.
	IsDelete bool
}

type rawTrigger struct {
	Name        *string               `yaml:"name"`
	Description *string               `yaml:"description"`
	Before      *string               `yaml:"before"`
	After       *string               `yaml:"after"`
	Inhibitors  *rawInhibitors        `yaml:"inhibitors"`
	Handlers    map[string]rawHandler `yaml:"handlers"`
	Paths       map[string]rawPath    `yaml:"paths"`
}

type rawInhibitors struct {
	Paths       *[]string `yaml:"paths"`
	Environment *[]string `yaml:"environment"`
}

type rawHandler struct {
	Run    *string   `yaml:"run"`
	Args   *[]string `yaml:"args"`
	Delete *[]string `yaml:"delete"`
}

type rawPath struct {
	Handlers *[]string `yaml:"handlers"`
	Type     *string   `yaml:"type"`
}

// Parse parses one trigger file; file names it in errors.
func Parse(file string, data []byte) (_ *Trigger, err error) {
	defer func() {
		if r := recover(); r != nil { // the YAML decoder must not take the caller down
			err = fmt.Errorf("trigger %s: YAML decoder failed: %v", file, r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var raw rawTrigger
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("trigger %s: empty file", file)
		}
		return nil, fmt.Errorf("trigger %s: %w", file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("trigger %s: more than one YAML document", file)
	}
	bad := func(format string, a ...any) (*Trigger, error) {
		return nil, fmt.Errorf("trigger %s: %s", file, fmt.Sprintf(format, a...))
	}
	switch {
	case raw.Name == nil:
		return bad("no name")
	case raw.Description == nil:
		return bad("no description")
	case raw.Handlers == nil:
		return bad("no handlers")
	case raw.Paths == nil:
		return bad("no paths")
	}
	t := &Trigger{File: file, Name: *raw.Name, Description: *raw.Description,
		Handlers: map[string]Handler{}, Source: slices.Clone(data)}
	if raw.Before != nil {
		t.Before = *raw.Before
	}
	if raw.After != nil {
		t.After = *raw.After
	}
	if raw.Inhibitors != nil {
		if raw.Inhibitors.Paths == nil || raw.Inhibitors.Environment == nil {
			return bad("inhibitors need both paths and environment")
		}
		t.Inhibitors = &Inhibitors{Paths: *raw.Inhibitors.Paths, Environment: *raw.Inhibitors.Environment}
	}
	for name, h := range raw.Handlers {
		switch {
		case h.Run != nil && h.Args != nil:
			t.Handlers[name] = Handler{Run: *h.Run, Args: *h.Args}
		case h.Delete != nil:
			t.Handlers[name] = Handler{Delete: *h.Delete, IsDelete: true}
		case h.Run != nil:
			return bad("handler %q: run without args (moss requires args, [] for none)", name)
		default:
			return bad("handler %q: neither run+args nor delete", name)
		}
	}
	for pat, p := range raw.Paths {
		if p.Handlers == nil {
			return bad("path %q: no handlers", pat)
		}
		rule := PathRule{Handlers: *p.Handlers}
		if p.Type != nil {
			if *p.Type != "directory" && *p.Type != "symlink" {
				return bad("path %q: type %q (want directory or symlink)", pat, *p.Type)
			}
			rule.Type = *p.Type
		}
		cp, err := CompilePattern(pat)
		if err != nil {
			return nil, fmt.Errorf("trigger %s: %w", file, err)
		}
		rule.Pattern = cp
		t.Paths = append(t.Paths, rule)
	}
	// moss keeps paths in a BTreeMap ordered by pattern text, then groups.
	slices.SortFunc(t.Paths, func(a, b PathRule) int {
		if c := strings.Compare(a.Pattern.source, b.Pattern.source); c != 0 {
			return c
		}
		return slices.Compare(a.Pattern.groups, b.Pattern.groups)
	})
	return t, nil
}

// LoadError is a trigger file that was skipped (moss skips it silently).
type LoadError struct {
	File string
	Err  error
}

func (e *LoadError) Error() string { return e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }

// Files lists the trigger files of a scope under fsys (rooted at the
// trigger directory), in load order: sorted by name, a .kdl file taking the
// place of the .yaml with the same stem. Missing directories are empty.
func Files(fsys fs.FS, scope Scope) []string {
	var names []string
	for _, n := range []string{string(scope) + ".yaml", string(scope) + ".kdl"} {
		if st, err := fs.Stat(fsys, n); err == nil && !st.IsDir() {
			names = append(names, n)
		}
	}
	ents, _ := fs.ReadDir(fsys, string(scope)+".d")
	for _, e := range ents {
		if !e.IsDir() {
			names = append(names, path.Join(string(scope)+".d", e.Name()))
		}
	}
	return Select(names, scope)
}

// Select picks, from file names relative to the trigger directory, those
// moss loads for a scope (<scope>.yaml|kdl, <scope>.d/*.yaml|kdl, no
// deeper), in load order.
func Select(names []string, scope Scope) []string {
	var out []string
	for _, n := range names {
		dir, base := path.Split(n)
		ext := path.Ext(base)
		if ext != ".yaml" && ext != ".kdl" {
			continue
		}
		if (dir == "" && strings.TrimSuffix(base, ext) == string(scope)) || dir == string(scope)+".d/" {
			out = append(out, n)
		}
	}
	return dedupeKDL(out)
}

// LoadFiles is Load over file contents by name (relative to the trigger
// directory), for trees that are not a file system.
func LoadFiles(files map[string][]byte, scope Scope) (trigs []*Trigger, skipped []*LoadError) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	for _, name := range Select(names, scope) {
		t, err := parseFile(name, files[name], nil)
		if err != nil {
			skipped = append(skipped, &LoadError{File: name, Err: err})
			continue
		}
		trigs = append(trigs, t)
	}
	return trigs, skipped
}

func parseFile(name string, data []byte, readErr error) (*Trigger, error) {
	if strings.HasSuffix(name, ".kdl") {
		return nil, fmt.Errorf("trigger %s: KDL trigger files are not supported", name)
	}
	if readErr != nil {
		return nil, fmt.Errorf("trigger %s: %w", name, readErr)
	}
	return Parse(name, data)
}

// dedupeKDL keeps, of foo.yaml and foo.kdl, the .kdl one (as moss does).
func dedupeKDL(names []string) []string {
	kdl := map[string]bool{}
	for _, n := range names {
		if s, ok := strings.CutSuffix(n, ".kdl"); ok {
			kdl[s] = true
		}
	}
	var out []string
	for _, n := range names {
		if s, ok := strings.CutSuffix(n, ".yaml"); ok && kdl[s] {
			continue
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Load reads and parses the trigger files of a scope from fsys, which is
// rooted at the trigger directory (usr/share/moss/triggers). Files that do
// not parse are returned as skipped, each error naming its file.
func Load(fsys fs.FS, scope Scope) (trigs []*Trigger, skipped []*LoadError) {
	for _, name := range Files(fsys, scope) {
		var data []byte
		var err error
		if !strings.HasSuffix(name, ".kdl") {
			data, err = fs.ReadFile(fsys, name)
		}
		t, err := parseFile(name, data, err)
		if err != nil {
			skipped = append(skipped, &LoadError{File: name, Err: err})
			continue
		}
		trigs = append(trigs, t)
	}
	return trigs, skipped
}

func sortStrings(s []string) { slices.Sort(s) }
