package erofs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/internal/tree"
)

// composefsAsset is one dump of shared/testdata/composefs.
type composefsAsset struct {
	name    string // file name, e.g. "special.dump"
	path    string
	sha256  string // expected image sha256 ("" for should-fail assets)
	version int    // -1: default range; else min = max = version
	strict  bool
}

// lenientAssets are parsed without strict mode, as upstream's test does.
var lenientAssets = map[string]bool{
	"no-newline.dump":                      true,
	"longlink.dump":                        true,
	"honggfuzz-longlink-unterminated.dump": true,
}

func composefsAssets(t testing.TB) (positive, negative []composefsAsset) {
	t.Helper()
	dir := testenv.SharedPath(t, "testdata", "composefs")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".dump") && !strings.HasSuffix(name, ".dump.gz") {
			continue
		}
		a := composefsAsset{name: name, path: filepath.Join(dir, name), version: -1, strict: !lenientAssets[name]}
		if strings.HasPrefix(name, "should-fail-") {
			negative = append(negative, a)
			continue
		}
		sum, err := os.ReadFile(a.path + ".sha256")
		if err != nil {
			continue
		}
		a.sha256 = strings.Fields(string(sum))[0]
		if v, err := os.ReadFile(a.path + ".version"); err == nil {
			switch strings.TrimSpace(string(v)) {
			case "0":
				a.version = 0
			case "1":
				a.version = 1
			default:
				t.Fatalf("%s.version: unexpected %q", name, v)
			}
		}
		positive = append(positive, a)
	}
	if len(positive) < 13 || len(negative) < 14 {
		t.Fatalf("found %d positive and %d negative composefs assets in %s, want 13 and 14", len(positive), len(negative), dir)
	}
	return positive, negative
}

// readAsset returns the dump text (gunzipped).
func readAsset(t testing.TB, a composefsAsset) []byte {
	t.Helper()
	data, err := os.ReadFile(a.path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(a.name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

func parseAsset(t testing.TB, a composefsAsset) *tree.Node {
	t.Helper()
	root, err := ParseDump(bytes.NewReader(readAsset(t, a)), DumpOptions{Strict: a.strict, Name: a.name})
	if err != nil {
		t.Fatalf("ParseDump: %v", err)
	}
	return root
}

func TestParseDumpAssets(t *testing.T) {
	positive, negative := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			if !root.IsDir() || root.Parent != nil {
				t.Fatalf("root is not a directory")
			}
		})
	}
	for _, a := range negative {
		t.Run(a.name, func(t *testing.T) {
			// Lenient parsing, so the error is the one the asset is about.
			_, err := ParseDump(bytes.NewReader(readAsset(t, a)), DumpOptions{Name: a.name})
			if err == nil {
				t.Fatal("ParseDump accepted it")
			}
			var de *DumpError
			if !errors.As(err, &de) || de.Name != a.name || de.Line < 1 || !strings.HasPrefix(err.Error(), a.name+":") {
				t.Errorf("error %q does not name the input and line", err)
			}
			t.Log(err)
		})
	}
}
