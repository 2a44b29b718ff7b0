// Package stoneapi is what the state package needs of a reader of moss's
// .stone packages (package stone implements it as stone.Format), in a
// package of its own: the state package imports this one and not the
// reader, so that a program that never reads a stone (mossfs) does not
// link the reader and its dependencies, whose package initialisation every
// process pays at start. GODEBUG=inittrace put 0.27 ms on klauspost/cpuid
// (its CPU probes trap to the hypervisor on a virtual machine, and it came
// through zeebo/xxh3) and 0.17 ms on klauspost/compress's CRC tables;
// without them mossfs --version takes 0.3 ms less CPU (2.8 ms, against
// 1.3-1.5 ms for an empty Go program on the development VM).
package stoneapi

import (
	"context"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/tree"
)

// Package is what an import keeps of a package's metadata.
type Package struct {
	Name string
	// Version is version-release-build_release, as moss names the
	// package's file.
	Version string
	// Provides and Conflicts are as moss writes them: kind(name).
	Provides, Conflicts []string
}

// KnownContent is the known-content index of a store: the fs-verity
// digest of each content, by XXH3-128 digest, that an import of a stone
// stored, so that importing a stone whose contents are all known need not
// decompress anything.
type KnownContent interface {
	Lookup(xxh [16]byte) (digest [32]byte, ok bool)
	Record(xxh [16]byte, digest [32]byte) error
	Sync() error
	Close() error
}

// Format reads .stone packages.
type Format interface {
	// OpenKnown opens (creating it if need be) the known-content index
	// kept in dir.
	OpenKnown(dir string) (KnownContent, error)
	// Import stores the contents of the binary package in file through
	// sink (those known maps to an object the sink still has are not
	// even decompressed; the new ones are recorded in known, which may
	// be nil) and returns its metadata and its layout as a tree rooted
	// at /usr.
	Import(ctx context.Context, file string, sink cas.ObjectSink, known KnownContent) (Package, *tree.Node, error)
	// Read returns the package's metadata and layout without reading its
	// contents: a regular file's digest is digest(its XXH3-128 digest).
	Read(file string, digest func(xxh [16]byte) [32]byte) (Package, *tree.Node, error)
}
