// Command kvmexit runs inside the kvmtests guest and ends the VM with a
// status QEMU reports as its exit code: `kvmexit 0` → QEMU exits 1 (pass),
// any other value → 3 (fail).
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/mossfs/mossfs/kvmtests/debugexit"
)

func main() {
	code := byte(1)
	if len(os.Args) > 1 {
		if n, err := strconv.Atoi(os.Args[1]); err == nil && n == 0 {
			code = 0
		}
	}
	err := debugexit.Exit(code)
	fmt.Fprintln(os.Stderr, "kvmexit:", err)
	os.Exit(1)
}
