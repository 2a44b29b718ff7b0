package fusefs_test

import (
	"fmt"
	"log"

	"github.com/mossfs/mossfs/internal/fusefs"
)

// Mount a transaction's image at /mnt/usr, content from the store's object
// directory, and serve until it is unmounted.
func ExampleMount() {
	s, err := fusefs.Mount(fusefs.Options{
		Image:   "/.moss/images/4f1c…",
		Objects: "/.moss/cas/objects",
		Target:  "/mnt/usr",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("passthrough:", s.Passthrough())
	s.Wait() // until "mossfs umount /mnt/usr" (or s.Unmount())
}

// Switch the tree served at /mnt/usr by a running daemon, as a user who may
// not mount (the rootless switch): the daemon swaps its tree in place.
func ExampleRequestSwitch() {
	st, err := fusefs.RequestSwitch("/mnt/usr", "/.moss/images/9a02…", "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("now serving", st.Image, "generation", st.Generation)
}
