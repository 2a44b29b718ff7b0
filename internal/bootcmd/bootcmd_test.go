package bootcmd

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Param
	}{
		{"", nil},
		{"  ro  quiet\tmoss.tx=12\n", []Param{{Key: "ro"}, {Key: "quiet"}, {Key: "moss.tx", Value: "12", HasValue: true}}},
		{`opt="a b c" x`, []Param{{Key: "opt", Value: "a b c", HasValue: true}, {Key: "x"}}},
		{`"opt=a b" y`, []Param{{Key: "opt", Value: "a b", HasValue: true}, {Key: "y"}}},
		{`"bare word"`, []Param{{Key: "bare word"}}},
		// Quotes in the middle toggle but stay; no escapes.
		{`a=x"y z"w b`, []Param{{Key: "a", Value: `x"y z"w`, HasValue: true}, {Key: "b"}}},
		{`a=\"b c`, []Param{{Key: "a", Value: `\"b c`, HasValue: true}}},
		// An unterminated quote runs to the end.
		{`a="b c d`, []Param{{Key: "a", Value: "b c d", HasValue: true}}},
		{`k= e=`, []Param{{Key: "k", HasValue: true}, {Key: "e", HasValue: true}}},
		{`a=b=c`, []Param{{Key: "a", Value: "b=c", HasValue: true}}},
	} {
		got := Split(c.in)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Split(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

const hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestParse(t *testing.T) {
	p := Parse(`root=/dev/vda1 moss.fstx=3 moss.tx=7 moss.digest=sha256:` + hexA + ` moss.fallback=6,5,,4 quiet`)
	if p.TX != 7 || p.TXKey != "moss.tx" || !p.HasDigest || p.Digest[0] != 0xaa || !reflect.DeepEqual(p.Fallback, []uint64{6, 5, 4}) || len(p.Problems) != 0 {
		t.Fatalf("%+v", p)
	}
	p = Parse(`moss.fstx=3`)
	if p.TX != 3 || p.TXKey != "moss.fstx" {
		t.Errorf("moss.fstx: %+v", p)
	}
	// Later occurrences override earlier ones, as in the kernel.
	p = Parse(`moss.tx=1 moss.tx=2 moss.fallback=9 moss.fallback=8`)
	if p.TX != 2 || !reflect.DeepEqual(p.Fallback, []uint64{8}) {
		t.Errorf("override: %+v", p)
	}
	p = Parse(`moss.tx=x12 moss.digest=sha256:abc moss.fallback=4,-1,0 moss.tx=0`)
	if p.TX != 0 || p.HasDigest || !reflect.DeepEqual(p.Fallback, []uint64{4}) || len(p.Problems) != 5 {
		t.Errorf("malformed: %+v", p)
	}
	for _, pr := range p.Problems {
		if !strings.HasPrefix(pr, "moss.") {
			t.Errorf("problem does not name its parameter: %q", pr)
		}
	}
	if _, err := ParseDigest("sha512:" + hexA); err == nil {
		t.Error("sha512 accepted")
	}
	if d, err := ParseDigest(hexA); err != nil || d[31] != 0xaa {
		t.Errorf("bare hex: %v", err)
	}
	// Quoted values.
	p = Parse(`"moss.fallback=5,4" moss.tx="9"`)
	if p.TX != 9 || !reflect.DeepEqual(p.Fallback, []uint64{5, 4}) {
		t.Errorf("quoted: %+v", p)
	}
}

func TestCandidatesAndSelect(t *testing.T) {
	p := Parse(`moss.tx=7 moss.digest=` + hexA + ` moss.fallback=6,7,5`)
	c := p.Candidates(3)
	if len(c) != 3 || c[0].ID != 7 || !c[0].HasDigest || c[1].ID != 6 || c[1].HasDigest || c[2].ID != 5 || c[2].Role != "fallback" {
		t.Fatalf("%+v", c)
	}
	var logs []string
	got, failed, err := Select(c, func(c Candidate) error {
		if c.ID == 5 {
			return nil
		}
		return errors.New("broken")
	}, func(s string) { logs = append(logs, s) })
	if err != nil || got.ID != 5 || len(failed) != 2 {
		t.Fatalf("select: %v %+v %v", got, failed, err)
	}
	if len(logs) != 2 || !strings.Contains(logs[0], "transaction 7 (moss.tx) cannot be booted: broken; falling back to transaction 6") {
		t.Errorf("logs %q", logs)
	}
	_, _, err = Select(c, func(Candidate) error { return errors.New("nope") }, nil)
	var nu *NoUsableError
	if !errors.As(err, &nu) || len(nu.Attempts) != 3 || !strings.Contains(err.Error(), "6 (fallback): nope") {
		t.Errorf("all fail: %v", err)
	}
	// No moss.tx: the active transaction, then fallbacks.
	c = Parse(`moss.fallback=2`).Candidates(4)
	if len(c) != 2 || c[0].ID != 4 || c[0].Role != "active" {
		t.Errorf("active: %+v", c)
	}
	// A malformed moss.tx: fallbacks first, the active one as last resort.
	c = Parse(`moss.tx=x7 moss.fallback=2`).Candidates(4)
	if len(c) != 2 || c[0].ID != 2 || c[1].ID != 4 || c[1].Role != "active" {
		t.Errorf("malformed tx: %+v", c)
	}
	if p := Parse(`moss.tx=x7 moss.fstx=3`); p.TX != 3 || p.TXMalformed {
		t.Errorf("valid fstx beside malformed tx: %+v", p)
	}
	if c := Parse(``).Candidates(0); len(c) != 0 {
		t.Errorf("nothing: %+v", c)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`root=/dev/vda moss.tx=7 moss.digest=sha256:` + hexA + ` moss.fallback=6,5`)
	f.Add(`"a=b c" d="e f`)
	f.Fuzz(func(t *testing.T, s string) {
		p := Parse(s)
		for _, c := range p.Candidates(1) {
			if c.ID == 0 {
				t.Fatal("candidate 0")
			}
		}
		for _, w := range Split(s) {
			if strings.ContainsAny(w.Key, " \t\n") && !strings.Contains(s, `"`) {
				t.Fatalf("unquoted key with space: %q", w.Key)
			}
		}
	})
}
