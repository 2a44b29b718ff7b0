package triggers

import (
	"fmt"
	"slices"
	"strings"
)

// Command is a handler with the captures of one match substituted.
type Command struct {
	Run    string   `json:"run,omitempty"`
	Args   []string `json:"args,omitempty"`
	Delete []string `json:"delete,omitempty"`
	// IsDelete tells a delete command (moss panics running one).
	IsDelete bool `json:"is_delete,omitempty"`
}

// String shows the command as moss logs it (no quoting).
func (c Command) String() string {
	parts := append([]string{c.Run}, c.Args...)
	if c.IsDelete {
		parts = append([]string{"rm", "--"}, c.Delete...)
	}
	return strings.Join(parts, " ")
}

// Compare orders commands as moss's derived Ord does: run commands before
// delete commands, then by run, then by args as a list.
func (c Command) Compare(d Command) int {
	if c.IsDelete != d.IsDelete {
		if !c.IsDelete {
			return -1
		}
		return 1
	}
	if c.IsDelete {
		return slices.Compare(c.Delete, d.Delete)
	}
	if x := strings.Compare(c.Run, d.Run); x != 0 {
		return x
	}
	return slices.Compare(c.Args, d.Args)
}

// Compile substitutes captures into the handler: each $(name) in run and in
// every arg, in name order, by plain replacement. Delete lists stay as they are.
func (h Handler) Compile(vars map[string]string) Command {
	if h.IsDelete {
		return Command{Delete: slices.Clone(h.Delete), IsDelete: true}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	sub := func(s string) string {
		for _, k := range keys {
			s = strings.ReplaceAll(s, "$("+k+")", vars[k])
		}
		return s
	}
	c := Command{Run: sub(h.Run), Args: make([]string, len(h.Args))}
	for i, a := range h.Args {
		c.Args[i] = sub(a)
	}
	return c
}

type extracted struct {
	name    string
	pattern *Pattern
	handler Handler
}

type hit struct {
	commands []Command // sorted, unique
	paths    map[string]bool
}

// Collection matches paths against a set of triggers (moss's
// triggers::Collection).
type Collection struct {
	handlers []extracted
	byName   map[string]*Trigger   // the last loaded trigger of each name
	defs     map[string][]*Trigger // every trigger of each name, load order
	hits     map[string]*hit
}

// NewCollection prepares triggers for matching. A path rule naming a
// handler its trigger does not define is an error (moss fails the whole
// trigger phase with MissingHandler).
func NewCollection(trigs []*Trigger) (*Collection, error) {
	c := &Collection{byName: map[string]*Trigger{}, defs: map[string][]*Trigger{}, hits: map[string]*hit{}}
	for _, t := range trigs {
		c.byName[t.Name] = t
		c.defs[t.Name] = append(c.defs[t.Name], t)
		for _, p := range t.Paths {
			for _, hn := range p.Handlers {
				h, ok := t.Handlers[hn]
				if !ok {
					return nil, fmt.Errorf("trigger %s (%s): path %q names handler %q, which it does not define", t.Name, t.File, p.Pattern.source, hn)
				}
				c.handlers = append(c.handlers, extracted{name: t.Name, pattern: p.Pattern, handler: h})
			}
		}
	}
	return c, nil
}

// Add matches one absolute path ("/usr/lib/modules/6.12.0/kernel") against
// every pattern and records the hits.
func (c *Collection) Add(path string) {
	for _, e := range c.handlers {
		vars, ok := e.pattern.Match(path)
		if !ok {
			continue
		}
		h := c.hits[e.name]
		if h == nil {
			h = &hit{paths: map[string]bool{}}
			c.hits[e.name] = h
		}
		h.paths[path] = true
		cmd := e.handler.Compile(vars)
		if i, found := slices.BinarySearchFunc(h.commands, cmd, Command.Compare); !found {
			h.commands = slices.Insert(h.commands, i, cmd)
		}
	}
}

// Run is one hit trigger in a plan.
type Run struct {
	Name string
	// Trigger is the definition moss looks the name up in (the last loaded
	// file of that name); Definitions are all files of that name.
	Trigger     *Trigger
	Definitions []*Trigger
	// Commands in moss's run order, duplicates collapsed.
	Commands []Command
	// Paths that matched, sorted.
	Paths []string
	// Deps are the names of earlier runs in the plan that this one must
	// follow: those it is ordered after in the DAG, directly or not.
	Deps []string
}

// Plan returns the hit triggers in moss's order (Collection::bake).
func (c *Collection) Plan() []*Run {
	names := make([]string, 0, len(c.hits))
	for n := range c.hits {
		names = append(names, n)
	}
	slices.Sort(names)
	g := &dag{index: map[string]int{}}
	for _, n := range names {
		g.node(n)
	}
	for _, n := range names {
		t := c.byName[n]
		self := g.node(n)
		if t.Before != "" {
			if _, ok := c.byName[t.Before]; ok {
				g.addEdge(self, g.node(t.Before))
			}
		}
		if t.After != "" {
			if _, ok := c.byName[t.After]; ok {
				g.addEdge(g.node(t.After), self)
			}
		}
	}
	var plan []*Run
	for _, i := range g.topo() {
		n := g.names[i]
		h, ok := c.hits[n]
		if !ok {
			continue // a loaded trigger named by a hit one, not hit itself
		}
		r := &Run{Name: n, Trigger: c.byName[n], Definitions: c.defs[n], Commands: h.commands}
		for p := range h.paths {
			r.Paths = append(r.Paths, p)
		}
		slices.Sort(r.Paths)
		for _, a := range g.ancestors(i) {
			if _, ok := c.hits[g.names[a]]; ok {
				r.Deps = append(r.Deps, g.names[a])
			}
		}
		slices.Sort(r.Deps)
		plan = append(plan, r)
	}
	return plan
}

// dag is the subset of petgraph's DiGraph and moss's dag crate the plan
// needs, with the same iteration orders: nodes by insertion index, the
// neighbours of a node most recently added edge first.
type dag struct {
	names []string
	index map[string]int
	out   [][]int // out[i]: targets, newest first
	in    [][]int
}

func (g *dag) node(name string) int {
	if i, ok := g.index[name]; ok {
		return i
	}
	g.index[name] = len(g.names)
	g.names = append(g.names, name)
	g.out = append(g.out, nil)
	g.in = append(g.in, nil)
	return len(g.names) - 1
}

// addEdge adds a→b unless b reaches a (a cycle, or a == b) or it exists.
func (g *dag) addEdge(a, b int) bool {
	if g.reaches(b, a) || slices.Contains(g.out[a], b) {
		return false
	}
	g.out[a] = slices.Insert(g.out[a], 0, b)
	g.in[b] = slices.Insert(g.in[b], 0, a)
	return true
}

func (g *dag) reaches(from, to int) bool {
	seen := make([]bool, len(g.names))
	stack := []int{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, g.out[n]...)
	}
	return false
}

// topo walks the graph as petgraph's Topo: the sources in index order on a
// stack; pop, emit, and push every successor whose predecessors are all
// emitted.
func (g *dag) topo() []int {
	var stack, order []int
	for i := range g.names {
		if len(g.in[i]) == 0 {
			stack = append(stack, i)
		}
	}
	visited := make([]bool, len(g.names))
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[n] {
			continue
		}
		visited[n] = true
		order = append(order, n)
		for _, m := range g.out[n] {
			ready := true
			for _, p := range g.in[m] {
				if !visited[p] {
					ready = false
					break
				}
			}
			if ready {
				stack = append(stack, m)
			}
		}
	}
	return order
}

// ancestors returns every node with a path to n.
func (g *dag) ancestors(n int) []int {
	seen := make([]bool, len(g.names))
	stack := slices.Clone(g.in[n])
	var out []int
	for len(stack) > 0 {
		m := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[m] {
			continue
		}
		seen[m] = true
		out = append(out, m)
		stack = append(stack, g.in[m]...)
	}
	return out
}
