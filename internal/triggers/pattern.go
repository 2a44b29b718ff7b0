package triggers

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern is a compiled moss path pattern (moss's fnmatch crate): a glob
// with named captures, compiled to an anchored regular expression.
//
//   - [^/]*      one path component, may be empty
//     **           .*         crosses "/": /a/**/*.ttf needs a subfolder, /a/** is all below /a/
//     ?            .          any one character, "/" included
//     . /          literal
//     \            \          passed through raw: escapes the next regex character
//     (name:sub)   (?P<name>sub), sub in the same language; no nesting
//     lone )       dropped
//     other        copied raw, so [abc], +, {n}, |, ^ and $ act as regex syntax
//
// moss's quirks are kept on purpose, so that a trigger file matches the same
// paths under mossfs as under moss:
//   - text gathered before a "(" is emitted after the group, not before it
//     ("lib(n:*).so" compiles to (?P<n>[^/]*)lib\.so): moss flushes pending
//     text only at the next token;
//   - a byte >= 0x80 ends the pattern (moss indexes the string by bytes and
//     stops at the first non-ASCII character);
//   - a group needs exactly one ":", a name of [_A-Za-z][_A-Za-z0-9]*, and
//     a name used twice is an error (Rust's regex refuses duplicates);
//   - a "{" that does not start a {n}, {n,} or {n,m} repetition is an error
//     (Rust's regex refuses it; Go's would take it literally).
//
// A capture that did not take part in a match reads as "" (moss panics).
type Pattern struct {
	source string
	re     *regexp.Regexp
	prefix string   // literal prefix every match starts with
	groups []string // capture names, sorted, unique
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.source }

// Regexp returns the compiled expression (anchored).
func (p *Pattern) Regexp() string { return p.re.String() }

// Groups returns the capture names in sorted order.
func (p *Pattern) Groups() []string { return append([]string(nil), p.groups...) }

// CompilePattern compiles a moss path pattern.
func CompilePattern(s string) (*Pattern, error) {
	var groups []string
	body, err := compileFragment(s, &groups, true)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", s, err)
	}
	if err := checkRepetitions(body); err != nil {
		return nil, fmt.Errorf("pattern %q: %w", s, err)
	}
	re, err := regexp.Compile("^" + body + "$")
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", s, err)
	}
	seen := map[string]bool{}
	for _, g := range groups {
		if seen[g] {
			return nil, fmt.Errorf("pattern %q: capture name %q used twice", s, g)
		}
		seen[g] = true
	}
	sortStrings(groups)
	prefix, _ := re.LiteralPrefix()
	return &Pattern{source: s, re: re, prefix: prefix, groups: groups}, nil
}

// compileFragment translates one (sub)pattern into regex text, appending
// capture names to groups. Groups are allowed only at the top level.
func compileFragment(s string, groups *[]string, top bool) (string, error) {
	var out, text strings.Builder
	flush := func() {
		out.WriteString(text.String())
		text.Reset()
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			break // moss's byte walker stops at the first non-ASCII byte
		}
		switch c {
		case '?':
			flush()
			out.WriteString(".")
		case '*':
			flush()
			if i+1 < len(s) && s[i+1] == '*' {
				i++
				out.WriteString(`.*`)
			} else {
				out.WriteString(`[^\/]*`)
			}
		case '\\':
			flush()
			out.WriteString(`\`)
		case '/':
			flush()
			out.WriteString(`\/`)
		case '.':
			flush()
			out.WriteString(`\.`)
		case '(':
			end := -1
			for j := i + 1; j < len(s) && s[j] < 0x80; j++ {
				if s[j] == ')' {
					end = j
					break
				}
			}
			if end < 0 {
				return "", fmt.Errorf("group at byte %d has no closing \")\"", i)
			}
			inner := s[i+1 : end]
			i = end
			name, sub, ok := strings.Cut(inner, ":")
			if !ok || strings.Contains(sub, ":") {
				return "", fmt.Errorf("group %q: want exactly one \":\" (name:pattern)", inner)
			}
			if !validGroupName(name) {
				return "", fmt.Errorf("group %q: bad capture name %q", inner, name)
			}
			if !top {
				return "", fmt.Errorf("nested group %q", inner)
			}
			subRe, err := compileFragment(sub, groups, false)
			if err != nil {
				return "", err
			}
			*groups = append(*groups, name)
			// Pending text is not flushed: moss emits it after the group.
			out.WriteString("(?P<" + name + ">" + subRe + ")")
		case ')':
			// dropped
		default:
			text.WriteByte(c)
		}
	}
	flush()
	return out.String(), nil
}

func validGroupName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// checkRepetitions refuses a "{" outside a character class that does not
// start a counted repetition, as Rust's regex does.
func checkRepetitions(re string) error {
	inClass := false
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\':
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			if i+1 < len(re) && re[i+1] == '^' {
				i++
			}
			if i+1 < len(re) && re[i+1] == ']' {
				i++ // a leading ] is literal
			}
		case c == '{':
			j := i + 1
			digits := 0
			for j < len(re) && re[j] >= '0' && re[j] <= '9' {
				j++
				digits++
			}
			if digits == 0 {
				return fmt.Errorf("%q at byte %d is not a counted repetition {n}, {n,} or {n,m}", re[i:min(len(re), i+8)], i)
			}
			if j < len(re) && re[j] == ',' {
				j++
				for j < len(re) && re[j] >= '0' && re[j] <= '9' {
					j++
				}
			}
			if j >= len(re) || re[j] != '}' {
				return fmt.Errorf("%q at byte %d is not a counted repetition {n}, {n,} or {n,m}", re[i:min(len(re), i+8)], i)
			}
			i = j
		}
	}
	return nil
}

// Match matches path against the pattern and returns the captures (nil map
// when the pattern has none).
func (p *Pattern) Match(path string) (map[string]string, bool) {
	if !strings.HasPrefix(path, p.prefix) {
		return nil, false
	}
	if len(p.groups) == 0 {
		return nil, p.re.MatchString(path)
	}
	m := p.re.FindStringSubmatchIndex(path)
	if m == nil {
		return nil, false
	}
	vars := make(map[string]string, len(p.groups))
	for _, g := range p.groups {
		i := p.re.SubexpIndex(g)
		if i >= 0 && m[2*i] >= 0 {
			vars[g] = path[m[2*i]:m[2*i+1]]
		} else {
			vars[g] = ""
		}
	}
	return vars, true
}
