package triggers

import (
	"testing"
)

// FuzzParse feeds trigger files (untrusted: they come from packages) to the
// parser and, when one parses, matches it against a few paths and plans it.
func FuzzParse(f *testing.F) {
	f.Add([]byte(kmodYAML), "/usr/lib/modules/6.1.0/kernel")
	f.Add([]byte(glibYAML), "/usr/share/glib-2.0/schemas/a.xml")
	f.Add([]byte(simple("a", "before: a\nafter: b\n")), "/usr/a/x")
	f.Add([]byte("name: x\ndescription: d\nhandlers: {h: {delete: [/x]}}\npaths: {\"/usr/(a:*)/**\": {handlers: [h]}}\n"), "/usr/x/y/z")
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		tr, err := Parse("f.yaml", data)
		if err != nil {
			return
		}
		c, err := NewCollection([]*Trigger{tr, tr})
		if err != nil {
			return
		}
		c.Add(path)
		c.Add("/usr")
		for _, r := range c.Plan() {
			if len(r.Commands) == 0 || len(r.Paths) == 0 {
				t.Fatalf("run %s without commands or paths", r.Name)
			}
		}
	})
}

// FuzzPattern compiles patterns and matches them: no panics, and a pattern
// of plain characters matches exactly itself.
func FuzzPattern(f *testing.F) {
	f.Add("/usr/lib/modules/(version:*)/*", "/usr/lib/modules/6.1/kernel")
	f.Add("/usr/share/fonts/**", "/usr/share/fonts/a/b")
	f.Add("/usr/lib/lib(n:*).so", "/usr/lib/xlib.so")
	f.Add("/usr/a)b?[c]{2}\\", "/usr/ab")
	f.Fuzz(func(t *testing.T, pattern, path string) {
		p, err := CompilePattern(pattern)
		if err != nil {
			return
		}
		vars, ok := p.Match(path)
		if ok {
			for _, g := range p.Groups() {
				if _, found := vars[g]; !found {
					t.Fatalf("%q vs %q: capture %s missing", pattern, path, g)
				}
			}
		}
		plain := true
		for i := 0; i < len(pattern); i++ {
			c := pattern[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '-' || c == '.') {
				plain = false
			}
		}
		if plain {
			if _, ok := p.Match(pattern); !ok {
				t.Fatalf("plain pattern %q does not match itself", pattern)
			}
			if path != pattern && ok {
				t.Fatalf("plain pattern %q matches %q", pattern, path)
			}
		}
	})
}
