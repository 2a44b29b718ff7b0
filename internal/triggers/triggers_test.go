package triggers

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// The rules of ../shared/reference/triggers.md ("Pattern language"), one
// row each: pattern, path, whether it matches, and the captures.
func TestPatternTable(t *testing.T) {
	type row struct {
		pattern, path string
		match         bool
		vars          map[string]string
	}
	rows := []row{
		// * is one component, possibly empty.
		{"/usr/lib/modules/(version:*)/*", "/usr/lib/modules/6.2.6/modules.symbols", true, map[string]string{"version": "6.2.6"}},
		{"/usr/lib/modules/(version:*)/*", "/usr/lib/modules/6.12.0-1-amd64/kernel", true, map[string]string{"version": "6.12.0-1-amd64"}},
		{"/usr/lib/modules/(version:*)/*", "/usr/lib/modules/6.6.67-51.kvm/kernel/net/netfilter/nft_hash.ko.zst", false, nil},
		{"/usr/lib/modules/(version:*)/*", "/usr/lib/modules/6.2.6", false, nil},
		{"/usr/share/mime/*", "/usr/share/mime/", true, nil},
		{"/usr/share/mime/*", "/usr/share/mime/packages", true, nil},
		{"/usr/share/mime/*", "/usr/share/mime/packages/freedesktop.org.xml", false, nil},
		{"/usr/lib*/lib*.so*", "/usr/lib64/libz.so.1", true, nil},
		{"/usr/lib*/lib*.so*", "/usr/lib/libz.so", true, nil},
		{"/usr/lib*/lib*.so*", "/usr/lib/x86_64-linux-gnu/libz.so.1", false, nil},
		// ** crosses "/"; /a/**/*.ttf needs a subfolder.
		{"/usr/share/fonts/**", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", true, nil},
		{"/usr/share/fonts/**", "/usr/share/fonts/", true, nil},
		{"/usr/share/fonts/**", "/usr/share/fonts", false, nil},
		{"/a/**/*.ttf", "/a/x.ttf", false, nil},
		{"/a/**/*.ttf", "/a/b/x.ttf", true, nil},
		{"/a/**/*.ttf", "/a/b/c/x.ttf", true, nil},
		// ? is any one character, "/" included.
		{"/usr/lib?x", "/usr/lib/x", true, nil},
		{"/usr/lib?x", "/usr/libax", true, nil},
		{"/usr/lib?x", "/usr/libx", false, nil},
		// . and / are literals.
		{"/usr/a.b", "/usr/axb", false, nil},
		{"/usr/a.b", "/usr/a.b", true, nil},
		// Captures, substitution source.
		{"/usr/share/info/(item:*.info*)", "/usr/share/info/gcc.info.gz", true, map[string]string{"item": "gcc.info.gz"}},
		{"/usr/share/info/(item:*.info*)", "/usr/share/info/dir", false, nil},
		{"/usr/lib/(a:*)/(b:*)", "/usr/lib/x/y", true, map[string]string{"a": "x", "b": "y"}},
		// Text before a group is emitted after it (moss's flush quirk).
		{"/usr/lib/lib(n:*).so", "/usr/lib/foolib.so", true, map[string]string{"n": "foo"}},
		{"/usr/lib/lib(n:*).so", "/usr/lib/libfoo.so", false, nil},
		// Everything else is regex syntax.
		{"/usr/lib/[ab]x", "/usr/lib/ax", true, nil},
		{"/usr/lib/[ab]x", "/usr/lib/[ab]x", false, nil},
		{"/usr/lib/a+", "/usr/lib/aaa", true, nil},
		{"/usr/(n:x|y)", "/usr/y", true, map[string]string{"n": "y"}},
		{"/usr/a{2}", "/usr/aa", true, nil},
		// A lone ")" is dropped.
		{"/usr/a)b", "/usr/ab", true, nil},
		// A backslash is passed through raw: \[ is a literal [.
		{`/usr/\[x`, "/usr/[x", true, nil},
		// Non-ASCII ends the pattern.
		{"/usr/share/é/x", "/usr/share/", true, nil},
		{"/usr/share/é/x", "/usr/share/é/x", false, nil},
		// Anchored at both ends.
		{"/usr/bin/depmod", "/usr/bin/depmod.old", false, nil},
		{"/usr/bin/depmod", "/x/usr/bin/depmod", false, nil},
	}
	for _, r := range rows {
		p, err := CompilePattern(r.pattern)
		if err != nil {
			t.Errorf("%q: %v", r.pattern, err)
			continue
		}
		vars, ok := p.Match(r.path)
		if ok != r.match {
			t.Errorf("%q (regex %s) vs %q: match %v, want %v", r.pattern, p.Regexp(), r.path, ok, r.match)
			continue
		}
		if ok && len(r.vars) > 0 && !maps.Equal(vars, r.vars) {
			t.Errorf("%q vs %q: captures %v, want %v", r.pattern, r.path, vars, r.vars)
		}
	}
}

func TestPatternErrors(t *testing.T) {
	for _, p := range []string{
		"/usr/(a:*",        // no closing )
		"/usr/(a)",         // no ":"
		"/usr/(a:b:c)",     // two ":"
		"/usr/(1a:*)",      // bad name
		"/usr/(:*)",        // empty name
		"/usr/(a:*)(a:*)",  // duplicate name
		"/usr/(a:(b:*))",   // nesting: the group ends at the first ")"
		"/usr/x.{service}", // not a counted repetition
		"/usr/[ab",         // regex syntax error
	} {
		if _, err := CompilePattern(p); err == nil {
			t.Errorf("%q compiled, want an error", p)
		}
	}
}

func TestRegexText(t *testing.T) {
	p, err := CompilePattern("/usr/lib/modules/(version:*)/*")
	if err != nil {
		t.Fatal(err)
	}
	if want := `^\/usr\/lib\/modules\/(?P<version>[^\/]*)\/[^\/]*$`; p.Regexp() != want {
		t.Errorf("regex %s, want %s", p.Regexp(), want)
	}
}

func TestCompileSubstitution(t *testing.T) {
	h := Handler{Run: "/usr/bin/$(a)", Args: []string{"-x", "$(a)-$(b)", "$(unknown)", "$a"}}
	got := h.Compile(map[string]string{"a": "one", "b": "two"})
	want := Command{Run: "/usr/bin/one", Args: []string{"-x", "one-two", "$(unknown)", "$a"}}
	if got.Compare(want) != 0 {
		t.Errorf("got %v, want %v", got, want)
	}
	// Replacement is sequential in name order: a's value may introduce $(b).
	got = Handler{Run: "r", Args: []string{"$(a)"}}.Compile(map[string]string{"a": "$(b)", "b": "X"})
	if got.Args[0] != "X" {
		t.Errorf("sequential substitution: %q, want X", got.Args[0])
	}
	got = Handler{Delete: []string{"$(a)"}, IsDelete: true}.Compile(map[string]string{"a": "X"})
	if got.Delete[0] != "$(a)" {
		t.Errorf("delete lists are not substituted: %q", got.Delete[0])
	}
}

const kmodYAML = `name: depmod
description: Update kernel module dependencies
handlers:
  depmod:
    run: /usr/sbin/depmod
    args: ["-a", "$(version)"]
paths:
  "/usr/lib/modules/(version:*)/*":
    handlers: [depmod]
    type: directory
`

const glibYAML = `name: glib2
description: Compile schemas and gio modules
needs: ignored
handlers:
  schemas: {run: /usr/bin/glib-compile-schemas, args: [/usr/share/glib-2.0/schemas]}
  gio: {run: /usr/bin/gio-querymodules, args: [--update-cache]}
paths:
  "/usr/share/glib-2.0/schemas/*": {handlers: [schemas]}
  "/usr/lib*/gio/modules/lib*.so": {handlers: [gio]}
`

func TestParse(t *testing.T) {
	tr, err := Parse("tx.d/kmod.yaml", []byte(kmodYAML))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Name != "depmod" || len(tr.Paths) != 1 || tr.Paths[0].Type != "directory" || tr.Handlers["depmod"].Run != "/usr/sbin/depmod" {
		t.Fatalf("parsed %+v", tr)
	}
	g, err := Parse("tx.d/glib2.yaml", []byte(glibYAML))
	if err != nil {
		t.Fatal(err)
	}
	// Paths in pattern order.
	if g.Paths[0].Pattern.String() != "/usr/lib*/gio/modules/lib*.so" {
		t.Errorf("path order: %v first", g.Paths[0].Pattern)
	}
	d, err := Parse("d.yaml", []byte("name: d\ndescription: x\nbefore: a\nafter: b\ninhibitors: {paths: [], environment: []}\nhandlers: {rm: {delete: [/usr/x]}}\npaths: {/usr/x: {handlers: [rm], type: symlink}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Handlers["rm"].IsDelete || d.Before != "a" || d.After != "b" || d.Inhibitors == nil {
		t.Errorf("parsed %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	base := "name: n\ndescription: d\nhandlers: {h: {run: /x, args: []}}\npaths: {/usr/x: {handlers: [h]}}\n"
	for what, doc := range map[string]string{
		"no name":          strings.Replace(base, "name: n\n", "", 1),
		"no description":   strings.Replace(base, "description: d\n", "", 1),
		"no handlers":      strings.Replace(base, "handlers: {h: {run: /x, args: []}}\n", "", 1),
		"no paths":         strings.Replace(base, "paths: {/usr/x: {handlers: [h]}}\n", "", 1),
		"run without args": strings.Replace(base, ", args: []", "", 1),
		"empty handler":    strings.Replace(base, "{run: /x, args: []}", "{}", 1),
		"bad type":         strings.Replace(base, "[h]}", "[h], type: file}", 1),
		"path no handlers": strings.Replace(base, "{handlers: [h]}", "{type: directory}", 1),
		"half inhibitors":  base + "inhibitors: {paths: []}\n",
		"list before":      base + "before: [a, b]\n",
		"duplicate key":    base + "name: m\n",
		"two documents":    base + "---\n" + base,
		"bad pattern":      strings.Replace(base, "/usr/x", "/usr/(x", 1),
		"empty":            "",
		"not a mapping":    "- a\n- b\n",
	} {
		if _, err := Parse("tx.d/f.yaml", []byte(doc)); err == nil {
			t.Errorf("%s: parsed, want an error", what)
		} else if !strings.Contains(err.Error(), "tx.d/f.yaml") {
			t.Errorf("%s: error %q does not name the file", what, err)
		}
	}
}

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"tx.yaml":          {Data: []byte(strings.Replace(kmodYAML, "name: depmod", "name: top", 1))},
		"tx.d/kmod.yaml":   {Data: []byte(kmodYAML)},
		"tx.d/glib2.yaml":  {Data: []byte(glibYAML)},
		"tx.d/bad.yaml":    {Data: []byte("name: x\n")},
		"tx.d/k.yaml":      {Data: []byte(glibYAML)},
		"tx.d/k.kdl":       {Data: []byte("trigger {}")},
		"tx.d/notes.txt":   {Data: []byte("x")},
		"tx.d/sub/s.yaml":  {Data: []byte(kmodYAML)},
		"sys.d/other.yaml": {Data: []byte(kmodYAML)},
	}
	trigs, skipped := Load(fsys, Transaction)
	var names, files []string
	for _, tr := range trigs {
		names = append(names, tr.Name)
		files = append(files, tr.File)
	}
	if want := []string{"tx.d/glib2.yaml", "tx.d/kmod.yaml", "tx.yaml"}; !slices.Equal(files, want) {
		t.Errorf("loaded %v, want %v", files, want)
	}
	var bad []string
	for _, s := range skipped {
		bad = append(bad, s.File)
		if !strings.Contains(s.Error(), s.File) {
			t.Errorf("error %q does not name %s", s, s.File)
		}
	}
	if want := []string{"tx.d/bad.yaml", "tx.d/k.kdl"}; !slices.Equal(bad, want) {
		t.Errorf("skipped %v, want %v (k.kdl shadows k.yaml)", bad, want)
	}
}

func collect(t *testing.T, docs ...string) *Collection {
	t.Helper()
	var trigs []*Trigger
	for i, d := range docs {
		tr, err := Parse("t"+string(rune('0'+i))+".yaml", []byte(d))
		if err != nil {
			t.Fatal(err)
		}
		trigs = append(trigs, tr)
	}
	c, err := NewCollection(trigs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// simple returns a trigger named n matching /usr/n/* with run /bin/n.
func simple(n, extra string) string {
	return "name: " + n + "\ndescription: d\n" + extra + "handlers: {h: {run: /bin/" + n + ", args: []}}\npaths: {/usr/" + n + "/*: {handlers: [h]}}\n"
}

func planNames(p []*Run) []string {
	var out []string
	for _, r := range p {
		out = append(out, r.Name)
	}
	return out
}

func TestDedupeAndCommands(t *testing.T) {
	c := collect(t, kmodYAML, glibYAML)
	for _, p := range []string{"/", "/usr", "/usr/lib", "/usr/lib/modules", "/usr/lib/modules/6.1.0",
		"/usr/lib/modules/6.1.0/kernel", "/usr/lib/modules/6.1.0/modules.order", "/usr/lib/modules/6.1.0/kernel/fs/ext4.ko",
		"/usr/lib/modules/6.12.0", "/usr/lib/modules/6.12.0/kernel",
		"/usr/share/glib-2.0/schemas/a.xml", "/usr/share/glib-2.0/schemas/b.xml", "/usr/lib64/gio/modules/libx.so"} {
		c.Add(p)
	}
	plan := c.Plan()
	if got := planNames(plan); !slices.Equal(got, []string{"glib2", "depmod"}) {
		t.Fatalf("plan %v, want [glib2 depmod] (reverse alphabetical)", got)
	}
	var cmds []string
	for _, r := range plan {
		for _, c := range r.Commands {
			cmds = append(cmds, c.String())
		}
	}
	want := []string{"/usr/bin/gio-querymodules --update-cache", "/usr/bin/glib-compile-schemas /usr/share/glib-2.0/schemas",
		"/usr/sbin/depmod -a 6.1.0", "/usr/sbin/depmod -a 6.12.0"}
	if !slices.Equal(cmds, want) {
		t.Errorf("commands %q, want %q", cmds, want)
	}
	if want := []string{"/usr/lib/modules/6.1.0/kernel", "/usr/lib/modules/6.1.0/modules.order", "/usr/lib/modules/6.12.0/kernel"}; !slices.Equal(plan[1].Paths, want) {
		t.Errorf("depmod paths %v, want %v", plan[1].Paths, want)
	}
}

func TestMissingHandler(t *testing.T) {
	tr, err := Parse("x.yaml", []byte("name: x\ndescription: d\nhandlers: {}\npaths: {/usr/x: {handlers: [nope]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCollection([]*Trigger{tr}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing handler: %v", err)
	}
}

func TestOrder(t *testing.T) {
	hitAll := func(c *Collection, names ...string) {
		for _, n := range names {
			c.Add("/usr/" + n + "/f")
		}
	}
	cases := []struct {
		name  string
		docs  []string
		hit   []string
		order []string
		deps  map[string][]string
	}{
		{"unconstrained: reverse alphabetical", []string{simple("a", ""), simple("c", ""), simple("b", "")},
			[]string{"a", "b", "c"}, []string{"c", "b", "a"}, nil},
		{"before", []string{simple("a", ""), simple("b", ""), simple("c", "before: a\n")},
			[]string{"a", "b", "c"}, []string{"c", "a", "b"}, map[string][]string{"a": {"c"}}},
		{"after", []string{simple("a", "after: b\n"), simple("b", "")},
			[]string{"a", "b"}, []string{"b", "a"}, map[string][]string{"a": {"b"}}},
		{"unknown name ignored", []string{simple("a", "after: zz\n"), simple("b", "")},
			[]string{"a", "b"}, []string{"b", "a"}, nil},
		{"cycle edge dropped", []string{simple("a", "before: b\n"), simple("b", "before: a\n")},
			[]string{"a", "b"}, []string{"a", "b"}, map[string][]string{"b": {"a"}}},
		{"self edge dropped", []string{simple("a", "before: a\n"), simple("b", "")},
			[]string{"a", "b"}, []string{"b", "a"}, nil},
		// x is loaded but not hit: hit triggers' edges to it still order them.
		{"through an unhit trigger", []string{simple("a", "before: x\n"), simple("b", "after: x\n"), simple("x", "")},
			[]string{"a", "b"}, []string{"a", "b"}, map[string][]string{"b": {"a"}}},
		// An unhit trigger's own edges do not count.
		{"unhit trigger's edges ignored", []string{simple("a", ""), simple("b", ""), simple("x", "before: b\nafter: a\n")},
			[]string{"a", "b"}, []string{"b", "a"}, nil},
		// The real sys chain of the reference.
		{"systemd chain", []string{
			simple("systemd_machine_id", "before: systemd_etcfiles\n"), simple("systemd_etcfiles", ""),
			simple("systemd_sysusers", "after: systemd_etcfiles\n"), simple("systemd_tmpfiles", "after: systemd_sysusers\n"),
			simple("glibc_ldconfig", "after: systemd_tmpfiles\n"), simple("ca_certificates", "after: systemd_tmpfiles\n"),
			simple("systemd_presets", "after: systemd_tmpfiles\n"), simple("systemd_udevd", "after: systemd_presets\n"),
			simple("fonts-cache", "")},
			[]string{"systemd_machine_id", "systemd_etcfiles", "systemd_sysusers", "systemd_tmpfiles", "glibc_ldconfig",
				"ca_certificates", "systemd_presets", "systemd_udevd", "fonts-cache"},
			// Sources in index order [fonts-cache, systemd_machine_id]; the stack pops the last.
			// tmpfiles' successors are pushed newest edge first (presets, glibc, ca), popped in reverse.
			[]string{"systemd_machine_id", "systemd_etcfiles", "systemd_sysusers", "systemd_tmpfiles",
				"ca_certificates", "glibc_ldconfig", "systemd_presets", "systemd_udevd", "fonts-cache"}, nil},
	}
	for _, tc := range cases {
		c := collect(t, tc.docs...)
		hitAll(c, tc.hit...)
		plan := c.Plan()
		if got := planNames(plan); !slices.Equal(got, tc.order) {
			t.Errorf("%s: order %v, want %v", tc.name, got, tc.order)
		}
		for _, r := range plan {
			if tc.deps == nil && tc.name != "systemd chain" && len(r.Deps) > 0 {
				t.Errorf("%s: %s deps %v, want none", tc.name, r.Name, r.Deps)
			}
			if want, ok := tc.deps[r.Name]; ok && !slices.Equal(r.Deps, want) {
				t.Errorf("%s: %s deps %v, want %v", tc.name, r.Name, r.Deps, want)
			}
		}
	}
}

func TestLoadFiles(t *testing.T) {
	trigs, skipped := LoadFiles(map[string][]byte{
		"tx.d/kmod.yaml": []byte(kmodYAML), "tx.d/a/b.yaml": []byte(kmodYAML), "sys.yaml": []byte(kmodYAML),
		"tx.d/bad.yaml": []byte("x: 1\n"), "tx.d/readme": []byte("x"),
	}, Transaction)
	if len(trigs) != 1 || trigs[0].File != "tx.d/kmod.yaml" || len(skipped) != 1 || skipped[0].File != "tx.d/bad.yaml" {
		t.Errorf("loaded %v, skipped %v", trigs, skipped)
	}
}
