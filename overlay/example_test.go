package overlay_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/overlay"
)

// Mount a composefs image with the kernel's overlayfs: the image holds the
// tree, the object store is the data-only lower layer. Mount returns a
// detached mount, attached here with move_mount(2). It needs root (or
// CAP_SYS_ADMIN in a mount namespace that owns the store).
func ExampleMount() {
	tmp, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	check(os.MkdirAll(filepath.Join(src, "bin"), 0o755))
	check(os.WriteFile(filepath.Join(src, "bin", "hello"), []byte("#!/bin/sh\necho hello from an overlay of a composefs image, read from its object store\n"), 0o755))
	check(os.WriteFile(filepath.Join(src, "secret"), []byte("for the owner only\n"), 0o600))

	store, err := cas.Create(filepath.Join(tmp, "store"))
	if err != nil {
		log.Fatal(err)
	}
	root, err := dirimport.Import(context.Background(), src, dirimport.Options{Sink: store})
	if err != nil {
		log.Fatal(err)
	}
	check(store.Sync())
	image := filepath.Join(tmp, "image.cfs")
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		log.Fatal(err)
	}
	check(os.WriteFile(image, img, 0o600))

	fd, info, err := overlay.Mount(overlay.Options{Image: image, ObjectsDir: store.ObjectsDir()})
	if err != nil {
		log.Fatal(err)
	}
	defer unix.Close(fd)
	target := filepath.Join(tmp, "mnt")
	check(os.Mkdir(target, 0o755))
	check(unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH))
	defer unix.Unmount(target, unix.MNT_DETACH)

	hello, err := os.ReadFile(filepath.Join(target, "bin", "hello"))
	if err != nil {
		log.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(target, "secret"))
	if err != nil {
		log.Fatal(err)
	}
	var fsinfo unix.Statfs_t
	check(unix.Statfs(target, &fsinfo))
	fmt.Printf("overlayfs: %v, read-only: %v, mounted by %s\n",
		fsinfo.Type == unix.OVERLAYFS_SUPER_MAGIC, fsinfo.Flags&unix.ST_RDONLY != 0, info.Method)
	fmt.Printf("bin/hello: %q\nsecret: %s\n", hello, st.Mode())
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
