package overlay_test

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestExampleMount runs ExampleMount, which has no "Output:" comment
// because it needs root and a private mount namespace (go test runs no
// example it could not check), and checks what it printed.
func TestExampleMount(t *testing.T) {
	testenv.RequireMountNS(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	stdout := os.Stdout
	os.Stdout = w
	func() {
		defer func() { os.Stdout = stdout }()
		ExampleMount()
	}()
	w.Close()
	got := string(<-out)
	want := []string{
		"overlayfs: true, read-only: true, mounted by ",
		"bin/hello: \"#!/bin/sh\\necho hello from an overlay of a composefs image, read from its object store\\n\"\nsecret: -rw-------\n",
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("ExampleMount printed:\n%s\nwant it to contain:\n%s", got, w)
		}
	}
	if !bytes.HasPrefix([]byte(got), []byte(want[0])) {
		t.Errorf("ExampleMount printed %q", got)
	}
	t.Logf("ExampleMount printed:\n%s", got)
}
