package fsverity_test

import (
	"fmt"
	"io"
	"strings"

	"github.com/mossfs/mossfs/fsverity"
)

func Example() {
	fmt.Printf("%x\n", fsverity.Sum([]byte("hello world\n")))

	// The same digest, streamed.
	h := fsverity.New()
	io.Copy(h, strings.NewReader("hello world\n"))
	fmt.Printf("%x\n", h.Sum())
	// Output:
	// 37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92
	// 37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92
}
