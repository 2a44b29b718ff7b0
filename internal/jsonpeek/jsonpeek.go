// Package jsonpeek reads a few top-level members of a small JSON object
// without encoding/json: it checks the whole text as encoding/json does
// and hands out the members' raw values, and the plain ones (a string
// without escapes, an unsigned integer) as Go values.
//
// Why: a command that runs once per process, such as mossfs switch, pays
// for encoding/json's first use: 0.2–0.3 ms of CPU on the development
// machines before the first value is decoded (its code and reflection
// data are faulted in, then each type's field table is built), more than
// the rest of reading the few records such a command needs. Callers fall
// back to encoding/json whenever Object or a value reader says no, so
// anything unusual (escapes, other cases, an invalid text) is decoded, or
// refused with its error, exactly as before.
package jsonpeek

import (
	"strconv"
	"strings"
)

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// Object scans data, which must be one JSON object (surrounded by
// whitespace at most), and calls member for each of its top-level members
// in order, with the key's raw text between the quotes and the value's
// raw text. It reports false if data is not a valid JSON object or a key
// has escapes (member may have been called for earlier members then).
func Object(data []byte, member func(key string, value []byte)) bool {
	s := scanner{data: data}
	s.space()
	if !s.object(member, 0) {
		return false
	}
	s.space()
	return s.i == len(s.data)
}

// Members returns the raw values of the top-level members of the JSON
// object data named keys, in the order of keys (nil for a missing one; of
// duplicates the last, which encoding/json keeps). It reports false where
// encoding/json might read data otherwise: data is not a valid JSON
// object, a key has escapes, or a key matches one of keys only in another
// case (encoding/json matches keys regardless of case).
func Members(data []byte, keys ...string) ([][]byte, bool) {
	vals := make([][]byte, len(keys))
	folded := false
	ok := Object(data, func(key string, value []byte) {
		for i, k := range keys {
			if key == k {
				vals[i] = value
			} else if strings.EqualFold(key, k) {
				folded = true
			}
		}
	})
	return vals, ok && !folded
}

// String returns the string a raw JSON value holds, if it is a string
// without escapes.
func String(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			// Escapes, and bytes encoding/json may rewrite (invalid
			// UTF-8 becomes U+FFFD): left to encoding/json.
			return "", false
		}
	}
	return string(body), true
}

// Uint returns the unsigned integer a raw JSON value holds, if it is one
// (digits only, as encoding/json decodes into a uint64).
func Uint(raw []byte) (uint64, bool) {
	if len(raw) == 0 || len(raw) > 1 && raw[0] == '0' {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(string(raw), 10, 64)
	return v, err == nil
}

// EmptyArray reports whether a raw JSON value is an empty array or null
// (what encoding/json decodes into an empty slice).
func EmptyArray(raw []byte) bool {
	if string(raw) == "null" {
		return true
	}
	if len(raw) < 2 || raw[0] != '[' || raw[len(raw)-1] != ']' {
		return false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

type scanner struct {
	data []byte
	i    int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *scanner) space() {
	for s.i < len(s.data) && isSpace(s.data[s.i]) {
		s.i++
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

// object scans an object at s.i; member, if not nil, gets its members.
func (s *scanner) object(member func(string, []byte), depth int) bool {
	if s.peek() != '{' || depth >= maxDepth {
		return false
	}
	s.i++
	s.space()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		start := s.i
		escaped, ok := s.str()
		if !ok {
			return false
		}
		key := s.data[start+1 : s.i-1]
		s.space()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.space()
		vstart := s.i
		if !s.value(depth + 1) {
			return false
		}
		if member != nil {
			if escaped {
				return false
			}
			member(string(key), s.data[vstart:s.i])
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) array(depth int) bool {
	if depth >= maxDepth {
		return false
	}
	s.i++ // '['
	s.space()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		if !s.value(depth + 1) {
			return false
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
			s.space()
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) value(depth int) bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object(nil, depth)
	case c == '[':
		return s.array(depth)
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.i < len(lit) || string(s.data[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// str scans a string; escaped says whether it has escapes.
func (s *scanner) str() (escaped, ok bool) {
	if s.peek() != '"' {
		return false, false
	}
	s.i++
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			return escaped, true
		case c < 0x20:
			return false, false
		case c == '\\':
			escaped = true
			s.i++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if !isHex(s.peek()) {
						return false, false
					}
					s.i++
				}
			default:
				return false, false
			}
		default:
			s.i++
		}
	}
	return false, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *scanner) number() bool {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		for isDigit(s.peek()) {
			s.i++
		}
	default:
		return false
	}
	if s.peek() == '.' {
		s.i++
		if !isDigit(s.peek()) {
			return false
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			return false
		}
		for isDigit(s.peek()) {
			s.i++
		}
	}
	return true
}
