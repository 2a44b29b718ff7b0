package erofs_test

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/tree"
)

// Build a composefs image from a directory: the directory's tree goes into
// the image, the contents of its larger files into a digest store (the
// layout of mkcomposefs --digest-store), named by their fs-verity digests.
func Example_buildFromDirectory() {
	tmp, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	must(os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc", "motd"), []byte(strings.Repeat("Welcome to a composefs image.\n", 4)), 0o644))
	must(os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("example\n"), 0o644))
	must(os.Symlink("etc/motd", filepath.Join(src, "motd")))

	store, err := cas.Create(filepath.Join(tmp, "store"))
	if err != nil {
		log.Fatal(err)
	}
	// UseEpoch sets every mtime to 0, so the image depends only on the
	// files (mkcomposefs --use-epoch).
	root, err := dirimport.Import(context.Background(), src, dirimport.Options{Sink: store, UseEpoch: true})
	if err != nil {
		log.Fatal(err)
	}
	// New objects must be durable before an image that references them is.
	must(store.Sync())
	image := filepath.Join(tmp, "image.cfs")
	f, err := os.Create(image)
	if err != nil {
		log.Fatal(err)
	}
	must(erofs.WriteImage(f, root, erofs.DefaultWriteOptions()))
	must(f.Close())

	must(root.Walk(func(n *tree.Node) error {
		switch {
		case n.Payload != "":
			_, err := os.Stat(filepath.Join(store.ObjectsDir(), n.Payload))
			fmt.Printf("%s: %d bytes in the store at %s (present: %v)\n", n.Path(), n.Size, n.Payload, err == nil)
		case n.Content != nil:
			fmt.Printf("%s: %d bytes inline\n", n.Path(), n.Size)
		case n.Target != "":
			fmt.Printf("%s -> %s\n", n.Path(), n.Target)
		}
		return nil
	}))
	// The object's name is the file's fs-verity digest, as
	// `fsverity digest --compact` prints it.

	// Output:
	// /etc/hostname: 8 bytes inline
	// /etc/motd: 120 bytes in the store at 8a/8874190d1f5f7f9d749a0a09a5b5420589bc4d04e754406a378deac3430517 (present: true)
	// /motd -> etc/motd
}

// Read an image as an fs.FS: the file system an overlay mount of it shows,
// with the contents of external files read from the object store.
func ExampleOpenFile() {
	tmp, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	store, err := cas.Create(filepath.Join(tmp, "store"))
	if err != nil {
		log.Fatal(err)
	}
	big := []byte(strings.Repeat("stored by digest\n", 8))
	d, err := store.PutBytes(big)
	if err != nil {
		log.Fatal(err)
	}
	must(store.Sync())

	// An image written from a composefs dump (composefs-dump(5)): a
	// directory, an inline file, an external file and a symlink.
	dump := fmt.Sprintf(`/ 0 40755 2 0 0 0 0.0
/doc 0 40755 2 0 0 0 0.0
/doc/big %d 100644 1 0 0 0 0.0 %s - %x
/doc/small 6 100600 1 0 0 0 0.0 - hello\n
/readme 9 120777 1 0 0 0 0.0 doc/small
`, len(big), cas.Payload(d), d)
	root, err := erofs.ParseDump(strings.NewReader(dump), erofs.DumpOptions{Name: "example.dump"})
	if err != nil {
		log.Fatal(err)
	}
	image := filepath.Join(tmp, "image.cfs")
	f, err := os.Create(image)
	if err != nil {
		log.Fatal(err)
	}
	must(erofs.WriteImage(f, root, erofs.DefaultWriteOptions()))
	must(f.Close())

	img, closeImage, err := erofs.OpenFile(image, os.DirFS(store.ObjectsDir()))
	if err != nil {
		log.Fatal(err)
	}
	defer closeImage()
	must(fs.WalkDir(img, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Printf("%-10s %s %d\n", p, info.Mode(), info.Size())
		return nil
	}))
	small, err := fs.ReadFile(img, "doc/small")
	if err != nil {
		log.Fatal(err)
	}
	content, err := fs.ReadFile(img, "doc/big")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("doc/small: %q\ndoc/big: %d bytes, as stored: %v\n", small, len(content), string(content) == string(big))
	// Output:
	// .          drwxr-xr-x 4096
	// doc        drwxr-xr-x 59
	// doc/big    -rw-r--r-- 136
	// doc/small  -rw------- 6
	// readme     Lrwxrwxrwx 9
	// doc/small: "hello\n"
	// doc/big: 136 bytes, as stored: true
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
