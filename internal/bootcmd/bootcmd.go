// Package bootcmd reads the mossfs parameters of a kernel command line and
// decides which transactions to try at boot, in which order, and what each
// must satisfy. It is pure logic: mossfs boot supplies the checks and the
// mount, so the whole selection is tested without a VM.
//
// Parameters:
//
//	moss.tx=<id>                the transaction to boot (moss.fstx=<id>, moss's
//	                            own name, is accepted; moss.tx wins if both are given)
//	moss.digest=sha256:<hex>    pins the fs-verity digest of that transaction's image
//	moss.fallback=<id>[,<id>…]  transactions to try, in order, if it cannot be used
//
// As in the kernel, a later occurrence of a parameter overrides an earlier one.
package bootcmd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Param is one word of the command line: key=value, or a bare key.
type Param struct {
	Key      string
	Value    string
	HasValue bool
}

// Split splits a kernel command line exactly as the kernel's next_arg does:
// words are separated by whitespace outside double quotes, a double quote
// toggles quoting and there are no escapes. A quote that opens the word or
// the value and the matching quote that ends the word are removed
// (`k="a b"` → k, "a b"; `"k=a b"` → k, "a b"); quotes elsewhere are kept.
func Split(cmdline string) []Param {
	var out []Param
	s := cmdline
	for {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
		if s == "" {
			return out
		}
		quoted := false
		if s[0] == '"' {
			s = s[1:]
			quoted = true
		}
		inQuote := quoted
		equals := -1
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if isSpace(c) && !inQuote {
				break
			}
			if equals < 0 && c == '=' {
				equals = i
			}
			if c == '"' {
				inQuote = !inQuote
			}
		}
		word := s[:i]
		s = s[i:]
		var p Param
		if equals < 0 {
			p.Key = word
			if quoted {
				p.Key = strings.TrimSuffix(p.Key, `"`)
			}
		} else {
			p.Key, p.Value, p.HasValue = word[:equals], word[equals+1:], true
			if strings.HasPrefix(p.Value, `"`) {
				p.Value = strings.TrimSuffix(p.Value[1:], `"`)
				if len(word[equals+1:]) == 1 { // a lone quote: next_arg removes just it
					p.Value = ""
				}
			} else if quoted {
				p.Value = strings.TrimSuffix(p.Value, `"`)
			}
		}
		out = append(out, p)
	}
}

func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// Params are the mossfs parameters of a command line.
type Params struct {
	// TX is the requested transaction (0: none given).
	TX uint64
	// TXKey is the parameter it came from: "moss.tx" or "moss.fstx".
	TXKey string
	// Digest pins TX's image digest when HasDigest.
	Digest    [32]byte
	HasDigest bool
	// Fallback lists the transactions to try after TX, in order.
	Fallback []uint64
	// TXMalformed is set when moss.tx/moss.fstx was given but could not be
	// parsed (and no valid one was given).
	TXMalformed bool
	// Problems are malformed mossfs parameters; they were ignored, and boot
	// reports them on the console.
	Problems []string
}

// Parse extracts the mossfs parameters. It never fails: a malformed
// parameter is recorded in Problems and ignored, so that a typo in one
// value still leaves the others (the fallbacks) usable.
func Parse(cmdline string) Params {
	var p Params
	var tx, fstx uint64
	for _, w := range Split(cmdline) {
		switch w.Key {
		case "moss.tx", "moss.fstx":
			id, err := ParseID(w.Value)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s=%s: %v", w.Key, w.Value, err))
				p.TXMalformed = true
				continue
			}
			if w.Key == "moss.tx" {
				tx = id
			} else {
				fstx = id
			}
		case "moss.digest":
			d, err := ParseDigest(w.Value)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("moss.digest=%s: %v", w.Value, err))
				p.HasDigest = false
				continue
			}
			p.Digest, p.HasDigest = d, true
		case "moss.fallback":
			p.Fallback = p.Fallback[:0]
			for _, f := range strings.Split(w.Value, ",") {
				if f == "" {
					continue
				}
				id, err := ParseID(f)
				if err != nil {
					p.Problems = append(p.Problems, fmt.Sprintf("moss.fallback=%s: %q: %v", w.Value, f, err))
					continue
				}
				p.Fallback = append(p.Fallback, id)
			}
		}
	}
	switch {
	case tx != 0:
		p.TX, p.TXKey = tx, "moss.tx"
	case fstx != 0:
		p.TX, p.TXKey = fstx, "moss.fstx"
	}
	if p.TX != 0 {
		p.TXMalformed = false
	}
	return p
}

// ParseID parses a transaction id: a decimal number ≥ 1.
func ParseID(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty transaction id")
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 || s[0] == '+' {
		return 0, fmt.Errorf("transaction id %q is not a decimal number ≥ 1", s)
	}
	return id, nil
}

// ParseDigest parses sha256:<64 hex> (the prefix may be left out).
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	h := strings.TrimPrefix(s, "sha256:")
	if strings.Contains(h, ":") {
		return d, fmt.Errorf("digest %q: only sha256 fs-verity digests are supported", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return d, fmt.Errorf("digest %q: want sha256:<64 hex digits>", s)
	}
	copy(d[:], b)
	return d, nil
}

// Candidate is one transaction to try.
type Candidate struct {
	ID uint64
	// Role says why it is tried: "moss.tx", "moss.fstx", "active" or "fallback".
	Role string
	// Digest is the pinned image digest (only for the requested transaction).
	Digest    [32]byte
	HasDigest bool
}

// Candidates lists the transactions to try in order: the requested one
// (or, if none was requested, active, the state's active transaction; 0 for
// none), then each fallback, without repeats. When the requested id was
// malformed, the fallbacks come first and the active transaction is only
// the last resort: the command line asked for something else.
func (p Params) Candidates(active uint64) []Candidate {
	var out []Candidate
	seen := map[uint64]bool{}
	add := func(c Candidate) {
		if c.ID == 0 || seen[c.ID] {
			return
		}
		seen[c.ID] = true
		out = append(out, c)
	}
	if p.TX != 0 {
		add(Candidate{ID: p.TX, Role: p.TXKey, Digest: p.Digest, HasDigest: p.HasDigest})
	} else if p.TXMalformed {
		for _, f := range p.Fallback {
			add(Candidate{ID: f, Role: "fallback"})
		}
		add(Candidate{ID: active, Role: "active"})
		return out
	} else {
		// A pinned digest without moss.tx pins the active transaction.
		add(Candidate{ID: active, Role: "active", Digest: p.Digest, HasDigest: p.HasDigest})
	}
	for _, f := range p.Fallback {
		add(Candidate{ID: f, Role: "fallback"})
	}
	return out
}

// Attempt records one candidate that could not be used.
type Attempt struct {
	Candidate Candidate
	Err       error
}

// NoUsableError is returned by Select when every candidate failed.
type NoUsableError struct{ Attempts []Attempt }

func (e *NoUsableError) Error() string {
	if len(e.Attempts) == 0 {
		return "no transaction to boot: no moss.tx= on the command line and no active transaction"
	}
	var b strings.Builder
	b.WriteString("no usable transaction:")
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, " %d (%s): %v;", a.Candidate.ID, a.Candidate.Role, a.Err)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Select calls try for each candidate in order until one succeeds, telling
// log why each rejected candidate was skipped, and returns the one that
// succeeded with the failed attempts before it.
func Select(cands []Candidate, try func(Candidate) error, log func(string)) (Candidate, []Attempt, error) {
	var failed []Attempt
	for i, c := range cands {
		err := try(c)
		if err == nil {
			return c, failed, nil
		}
		failed = append(failed, Attempt{Candidate: c, Err: err})
		if log != nil {
			next := "no fallback left"
			if i+1 < len(cands) {
				next = fmt.Sprintf("falling back to transaction %d", cands[i+1].ID)
			}
			log(fmt.Sprintf("transaction %d (%s) cannot be booted: %v; %s", c.ID, c.Role, err, next))
		}
	}
	return Candidate{}, failed, &NoUsableError{Attempts: failed}
}
