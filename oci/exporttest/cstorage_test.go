package exporttest

import (
	"context"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
)

// cstoragePull pulls ref (docker://) into a new containers/storage store
// with the given pull options, as podman 5 does (go.podman.io/image copy
// into go.podman.io/storage), and returns the store and the image's ID.
func cstoragePull(t *testing.T, ref string, pullOptions map[string]string, driverOptions ...string) (storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	store, err := storage.GetStore(storage.StoreOptions{
		RunRoot:            filepath.Join(dir, "run"),
		GraphRoot:          filepath.Join(dir, "graph"),
		GraphDriverName:    "overlay",
		GraphDriverOptions: append([]string{"overlay.mountopt=nodev"}, driverOptions...),
		PullOptions:        pullOptions,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Shutdown(true) })
	src, err := docker.ParseReference("//" + ref)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := istorage.Transport.ParseStoreReference(store, "localhost/pulled:1")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer policy.Destroy()
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: filepath.Join(dir, "cache")}
	if _, err := copy.Image(context.Background(), policy, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys}); err != nil {
		t.Fatalf("containers/storage pull of %s: %v", ref, err)
	}
	img, err := store.Image("localhost/pulled:1")
	if err != nil {
		t.Fatal(err)
	}
	return store, img.ID
}

// mountImage mounts a pulled image read-only and returns the mount point.
func mountImage(t *testing.T, store storage.Store, id string) string {
	t.Helper()
	mnt, err := store.MountImage(id, []string{"ro"}, "")
	if err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	t.Cleanup(func() { store.UnmountImage(id, true) })
	return mnt
}
