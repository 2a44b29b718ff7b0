package vm

import (
	"reflect"
	"testing"
)

func TestParseResults(t *testing.T) {
	log := `KVMTEST-BEGIN
=== RUN   TestA
    a_test.go:1: hello
--- PASS: TestA (0.01s)
=== RUN   TestB
=== RUN   TestB/x
    b_test.go:2: boom
--- FAIL: TestB (0.02s)
    --- FAIL: TestB/x (0.01s)
step output
KVMTEST PASS boot-primary
=== RUN   TestC
    c_test.go:3: cut
`
	got := ParseResults(log)
	var names, status []string
	for _, r := range got {
		names = append(names, r.Name)
		status = append(status, r.Status)
	}
	if !reflect.DeepEqual(names, []string{"TestA", "TestB", "boot-primary", "TestC"}) ||
		!reflect.DeepEqual(status, []string{"PASS", "FAIL", "PASS", "FAIL"}) {
		t.Fatalf("got %v %v", names, status)
	}
	if got[1].Output != "    b_test.go:2: boom\n--- FAIL: TestB (0.02s)\n    --- FAIL: TestB/x (0.01s)\n" {
		t.Errorf("TestB output %q", got[1].Output)
	}
	if got[2].Output != "step output\nKVMTEST PASS boot-primary\n" {
		t.Errorf("marker output %q", got[2].Output)
	}
}
