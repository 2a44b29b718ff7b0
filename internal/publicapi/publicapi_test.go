package publicapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// isInternal reports whether code outside the module that holds path
// cannot import it.
func isInternal(path string) bool {
	return path == "internal" || strings.HasPrefix(path, "internal/") ||
		strings.HasSuffix(path, "/internal") || strings.Contains(path, "/internal/")
}

// leakChecker walks the exported API of one package and records every
// place where it names a type of an internal package.
type leakChecker struct {
	leaks []string
	seen  map[types.Type]bool // unexported named types already walked
}

// check returns "pkg.Ident: names internal.Type" lines for pkg's exported
// identifiers: functions, variables, constants, type definitions and
// aliases, struct fields (and embedded types, whose methods are promoted),
// interface methods, the methods of exported types, and type parameters.
func check(pkg *types.Package) []string {
	c := &leakChecker{seen: map[types.Type]bool{}}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		where := pkg.Path() + "." + name
		tn, ok := obj.(*types.TypeName)
		if !ok || tn.IsAlias() {
			c.typ(where, obj.Type())
			continue
		}
		c.named(where, tn.Type())
	}
	slices.Sort(c.leaks)
	return slices.Compact(c.leaks)
}

// named walks what a user of a defined type can reach: its underlying type,
// its type parameters and its exported methods (on T and *T).
func (c *leakChecker) named(where string, t types.Type) {
	n, ok := types.Unalias(t).(*types.Named)
	if !ok {
		c.typ(where, t)
		return
	}
	c.seen[n] = true
	if tps := n.TypeParams(); tps != nil {
		for i := range tps.Len() {
			c.typ(where+"["+tps.At(i).Obj().Name()+"]", tps.At(i).Constraint())
		}
	}
	c.typ(where, n.Underlying())
	ms := types.NewMethodSet(types.NewPointer(n))
	for i := range ms.Len() {
		m := ms.At(i).Obj()
		if m.Exported() {
			c.typ(where+"."+m.Name(), m.Type())
		}
	}
}

func (c *leakChecker) typ(where string, t types.Type) {
	switch t := t.(type) {
	case *types.Alias:
		if p := t.Obj().Pkg(); p != nil && isInternal(p.Path()) {
			c.leaks = append(c.leaks, fmt.Sprintf("%s: names %s.%s", where, p.Path(), t.Obj().Name()))
			return
		}
		c.typ(where, types.Unalias(t))
	case *types.Named:
		p := t.Obj().Pkg()
		if p != nil && isInternal(p.Path()) {
			c.leaks = append(c.leaks, fmt.Sprintf("%s: names %s.%s", where, p.Path(), t.Obj().Name()))
			return
		}
		if args := t.TypeArgs(); args != nil {
			for i := range args.Len() {
				c.typ(where, args.At(i))
			}
		}
		// An exported type of a public package is checked on its own; an
		// unexported one is reachable only through this identifier.
		if p != nil && !t.Obj().Exported() && !c.seen[t.Origin()] {
			c.named(where, t.Origin())
		}
	case *types.Pointer:
		c.typ(where, t.Elem())
	case *types.Slice:
		c.typ(where, t.Elem())
	case *types.Array:
		c.typ(where, t.Elem())
	case *types.Chan:
		c.typ(where, t.Elem())
	case *types.Map:
		c.typ(where, t.Key())
		c.typ(where, t.Elem())
	case *types.Signature:
		for _, tup := range []*types.Tuple{t.Params(), t.Results()} {
			for i := range tup.Len() {
				c.typ(where, tup.At(i).Type())
			}
		}
	case *types.Struct:
		for i := range t.NumFields() {
			if f := t.Field(i); f.Exported() || f.Embedded() {
				c.typ(where+"."+f.Name(), f.Type())
			}
		}
	case *types.Interface:
		for i := range t.NumEmbeddeds() {
			c.typ(where, t.EmbeddedType(i))
		}
		for i := range t.NumExplicitMethods() {
			if m := t.ExplicitMethod(i); m.Exported() {
				c.typ(where+"."+m.Name(), m.Type())
			}
		}
	case *types.Union:
		for i := range t.Len() {
			c.typ(where, t.Term(i).Type())
		}
	case *types.TypeParam, *types.Basic, *types.Tuple, nil:
	default:
		c.leaks = append(c.leaks, fmt.Sprintf("%s: unhandled type %T", where, t))
	}
}

type listedPackage struct {
	ImportPath   string
	Name         string
	Dir          string
	Export       string
	XTestGoFiles []string
	Error        *struct{ Err string }
}

// goList runs go list -json in the module root and decodes its packages.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := strings.TrimSuffix(strings.TrimSpace(string(gomod)), "/go.mod")
	cmd := exec.Command("go", append([]string{"list", "-e", "-json=ImportPath,Name,Dir,Export,XTestGoFiles,Error"}, args...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestPublicAPINamesNoInternalType type-checks every public package of the
// module from the compiler's export data (go list -export, so build tags
// from GOFLAGS apply) and fails on each exported identifier that names an
// internal type.
func TestPublicAPINamesNoInternalType(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed: %v", err)
	}
	var public []string
	examples := 0
	for _, p := range goList(t, "./...") {
		if p.Name != "main" && !isInternal(p.ImportPath) {
			public = append(public, p.ImportPath)
			examples += checkExamples(t, p)
		}
	}
	if examples < 3 {
		t.Errorf("%d testable examples in the public packages, want at least 3", examples)
	}
	for _, want := range []string{"github.com/mossfs/mossfs/tree", "github.com/mossfs/mossfs/erofs", "github.com/mossfs/mossfs/cas"} {
		if !slices.Contains(public, want) {
			t.Fatalf("public packages %v lack %s: the discovery is broken", public, want)
		}
	}
	exports := map[string]string{}
	for _, p := range goList(t, append([]string{"-export", "-deps"}, public...)...) {
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	for _, path := range public {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatalf("import %s: %v", path, err)
		}
		for _, l := range check(pkg) {
			t.Errorf("%s: an outside program cannot use it; make the type public or keep the identifier unexported", l)
		}
		t.Logf("%s: %d exported identifiers checked", path, len(exportedNames(pkg)))
	}
}

func exportedNames(pkg *types.Package) []string {
	var out []string
	for _, n := range pkg.Scope().Names() {
		if ast.IsExported(n) {
			out = append(out, n)
		}
	}
	return out
}

// TestCheckerFindsLeaks: the checker itself, on a public package written to
// leak an internal type in every way it can, and to use one where it may.
func TestCheckerFindsLeaks(t *testing.T) {
	const internalSrc = `package x
type T struct{ A int }
type I interface{ M() }
func (T) M() {}
`
	const publicSrc = `package pub
import "example.com/m/internal/x"

func F() *x.T { return nil }                 // leak: result
func G(m map[string][]x.T) {}               // leak: nested parameter
var V x.I                                    // leak: variable
type S struct {
	Field  x.T                              // leak: exported field
	hidden x.T                              // fine: unexported
	x.I                                     // leak: embedded (its methods are promoted)
}
func (S) Method(chan x.T) {}                // leak: method parameter
func (S) hiddenMethod(x.T) {}               // fine: unexported method
type A = x.T                                 // leak: alias
type Gen[P any] struct{ Val P }
var W Gen[x.T]                               // leak: type argument
type hiddenType struct{ Out x.T }
func H() hiddenType { return hiddenType{} } // leak: via an unexported type's field
func hiddenFunc() x.T { return x.T{} }      // fine: unexported
type Iface interface{ Get() x.I }           // leak: interface method
type C[P interface{ x.I }] struct{}         // leak: constraint
type Clean struct{ N int }
func Ok(Clean) error { return nil }         // fine
`
	fset := token.NewFileSet()
	typecheck := func(path, src string, imp types.Importer) *types.Package {
		f, err := parser.ParseFile(fset, path+".go", src, 0)
		if err != nil {
			t.Fatal(err)
		}
		conf := types.Config{Importer: imp}
		pkg, err := conf.Check(path, fset, []*ast.File{f}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pkg
	}
	x := typecheck("example.com/m/internal/x", internalSrc, nil)
	pub := typecheck("example.com/m/pub", publicSrc, importerFunc(func(string) (*types.Package, error) { return x, nil }))
	got := check(pub)
	want := []string{
		"example.com/m/pub.A: names example.com/m/internal/x.T",
		"example.com/m/pub.C[P]: names example.com/m/internal/x.I",
		"example.com/m/pub.F: names example.com/m/internal/x.T",
		"example.com/m/pub.G: names example.com/m/internal/x.T",
		"example.com/m/pub.H.Out: names example.com/m/internal/x.T",
		"example.com/m/pub.Iface.Get: names example.com/m/internal/x.I",
		"example.com/m/pub.S.Field: names example.com/m/internal/x.T",
		"example.com/m/pub.S.I: names example.com/m/internal/x.I",
		"example.com/m/pub.S.Method: names example.com/m/internal/x.T",
		"example.com/m/pub.V: names example.com/m/internal/x.I",
		"example.com/m/pub.W: names example.com/m/internal/x.T",
	}
	if !slices.Equal(got, want) {
		t.Errorf("leaks found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if leaks := check(x); len(leaks) != 0 {
		t.Errorf("an internal package's own types reported: %v", leaks)
	}
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

// checkExamples fails on testable examples (Example functions in a _test
// package) that import an internal package: an example shows what a
// program outside the module can do. It returns how many it found.
func checkExamples(t *testing.T, p listedPackage) int {
	n := 0
	fset := token.NewFileSet()
	for _, name := range p.XTestGoFiles {
		f, err := parser.ParseFile(fset, p.Dir+"/"+name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		var ex []string
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Example") {
				ex = append(ex, fn.Name.Name)
			}
		}
		if len(ex) == 0 {
			continue
		}
		n += len(ex)
		for _, imp := range f.Imports {
			if path := strings.Trim(imp.Path.Value, `"`); isInternal(path) {
				t.Errorf("%s/%s (%s) imports %s: examples may use only public packages", p.ImportPath, name, strings.Join(ex, ", "), path)
			}
		}
	}
	return n
}
