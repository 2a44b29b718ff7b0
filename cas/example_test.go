package cas_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/mossfs/mossfs/cas"
)

func Example() {
	dir, _ := os.MkdirTemp("", "cas-example-")
	defer os.RemoveAll(dir)

	s, err := cas.Create(filepath.Join(dir, "store"))
	if err != nil {
		log.Fatal(err)
	}
	d, err := s.PutBytes([]byte("hello world\n"))
	if err != nil {
		log.Fatal(err)
	}
	// Make the new objects durable before anything that names them (an
	// image) is published.
	if err := s.Sync(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("redirect:", "/"+cas.Payload(d))
	fmt.Println("has:", s.Has(d))
	// Output:
	// redirect: /37/061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92
	// has: true
}
