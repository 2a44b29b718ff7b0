package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

func TestVerifySeal(t *testing.T) {
	root := tree.NewDir("", 0o755)
	root.AddChild(&tree.Node{Name: "f", Mode: tree.TypeReg | 0o644, Nlink: 1, Size: 3, Content: []byte("abc")})
	got, err := VerifySeal(nil, root)
	if err != nil || got != "" {
		t.Fatalf("no label: %q %v", got, err)
	}
	_, err = VerifySeal(map[string]string{LabelComposefs: strings.Repeat("0", 64)}, root)
	var se *SealError
	if !errors.As(err, &se) || se.Composed == "" || !strings.Contains(err.Error(), se.Composed) || !strings.Contains(err.Error(), strings.Repeat("0", 64)) {
		t.Fatalf("wrong label: %v", err)
	}
	if d, err := VerifySeal(map[string]string{LabelComposefs: strings.ToUpper(se.Composed)}, root); err != nil || d != se.Composed {
		t.Fatalf("right label: %q %v", d, err)
	}
	if _, err := VerifySeal(map[string]string{LabelComposefs: "nothex"}, root); err == nil || errors.As(err, new(*SealError)) {
		t.Fatalf("malformed label: %v", err)
	}
}
