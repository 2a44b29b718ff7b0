package state

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/stoneapi"
	"github.com/mossfs/mossfs/tree"
)

// Importer puts inputs' contents into the state's store and returns them
// as fragments ready for Compose. The caller holds Lock (shared) from the
// first import until Compose returns, so gc cannot take the new objects.
type Importer struct {
	s      *State
	stones stoneapi.Format       // nil: no stones
	known  stoneapi.KnownContent // nil without stones
	// Progress, if set, is called as tree files are stored.
	Progress func(files, bytes int64)
	// XattrNamespaces, if not empty, keeps only the xattrs of these
	// namespaces ("user", "security", "trusted", "system") of imported
	// trees.
	XattrNamespaces []string
}

// NewImporter returns an importer into the state's store. stones reads
// .stone packages (stone.Format; nil for a program that imports none): its
// known-content index under the state root is opened here.
func (s *State) NewImporter(stones stoneapi.Format) (*Importer, error) {
	im := &Importer{s: s, stones: stones}
	if stones != nil {
		k, err := stones.OpenKnown(s.KnownContentPath())
		if err != nil {
			return nil, err
		}
		im.known = k
	}
	return im, nil
}

// Close closes the known-content index.
func (im *Importer) Close() error {
	if im.known == nil {
		return nil
	}
	return im.known.Close()
}

// Sync makes the imported objects and the known-content index durable.
func (im *Importer) Sync() error {
	if im.known != nil {
		if err := im.known.Sync(); err != nil {
			return err
		}
	}
	return im.s.Sync()
}

// errNoStones is the error of stone imports by an Importer made without a
// stone reader.
func errNoStones(file string) error {
	return fmt.Errorf("stone %s: this program reads no .stone packages (state.NewImporter got no stone reader)", file)
}

// Stone imports a .stone package: its contents go to the store (those the
// known-content index maps to an object still present are not even
// decompressed), its layout becomes the fragment.
func (im *Importer) Stone(ctx context.Context, file string) (Fragment, error) {
	if im.stones == nil {
		return Fragment{}, errNoStones(file)
	}
	p, root, err := im.stones.Import(ctx, file, im.s.IndexedSink(), im.known)
	if err != nil {
		return Fragment{}, err
	}
	return Fragment{Input: stoneInput(p, file), Root: root}, nil
}

func stoneInput(p stoneapi.Package, file string) Input {
	return Input{Kind: KindStone, Name: p.Name, Version: p.Version, Source: absPath(file), Provides: p.Provides, Conflicts: p.Conflicts}
}

// StoneInput reads only a package's metadata and layout (no content is
// decompressed or stored), as the Input that importing it would give.
func StoneInput(stones stoneapi.Format, file string) (Input, error) {
	p, _, err := stones.Read(file, func([16]byte) [32]byte { return [32]byte{} })
	if err != nil {
		return Input{}, err
	}
	return stoneInput(p, file), nil
}

// NewInputs are the inputs a compose adds, as given on its command line.
type NewInputs struct {
	Stones []string // .stone files
	Trees  []string // DIR[:PREFIX]
	Dumps  []string // FILE[:PREFIX], composefs dumps
}

// PreCheck looks for conflicts before any content is stored: it merges the
// inputs a compose would have — those of from (minus remove and minus those
// the new packages replace) and the packages in stoneFiles, read without
// their content — and reports every conflict it can decide: declared
// package conflicts, paths of different types, modes, owners or symlink
// targets, and different content where it is known (two new packages
// compare by XXH3-128; a new package's content the known-content index
// maps). Content it cannot compare yet (new to the store, against a base
// file) is left to Compose's own check after the import.
//
// Trees (DIR[:PREFIX] arguments) are read and hashed without storing
// anything, so their conflicts, content included, are all found here; the
// price is hashing each tree twice (here and when it is imported). Dumps
// carry their digests and are compared as they are.
func (im *Importer) PreCheck(ctx context.Context, from uint64, remove []string, add NewInputs) error {
	s := im.s
	stoneFiles := add.Stones
	pending := map[string]bool{} // stand-in digests, hex
	var frags []Fragment
	keys := map[string]bool{}
	for _, arg := range add.Dumps {
		file, prefix := ParseTreeArg(arg)
		root, err := readDumpFile(file)
		if err != nil {
			return err
		}
		root.Walk(func(n *tree.Node) error {
			if n.LinkTo == nil && n.Mode&tree.TypeMask == tree.TypeReg && n.Payload != "" && len(n.Digest) != 32 {
				// No digest in the dump: known only once hashed.
				d := sha256.Sum256([]byte("mossfs pending content " + file + n.Path()))
				n.Digest = d[:]
				pending[hex.EncodeToString(d[:])] = true
			}
			return nil
		})
		fr, err := placedFragment(KindDump, file, prefix, root)
		if err != nil {
			return err
		}
		keys[fr.Input.Key()] = true
		frags = append(frags, fr)
	}
	for _, arg := range add.Trees {
		dir, prefix := ParseTreeArg(arg)
		root, err := dirimport.Import(ctx, dir, dirimport.Options{XattrNamespaces: im.XattrNamespaces})
		if err != nil {
			return err
		}
		fr, err := placedFragment(KindTree, dir, prefix, root)
		if err != nil {
			return err
		}
		keys[fr.Input.Key()] = true
		frags = append(frags, fr)
	}
	for _, file := range stoneFiles {
		if im.stones == nil {
			return errNoStones(file)
		}
		p, root, err := im.stones.Read(file, func(xxh [16]byte) [32]byte {
			if d, ok := im.known.Lookup(xxh); ok && s.store.Has(d) {
				return d
			}
			d := sha256.Sum256(append([]byte("mossfs pending content "), xxh[:]...))
			pending[hex.EncodeToString(d[:])] = true
			return d
		})
		if err != nil {
			return err
		}
		in := stoneInput(p, file)
		keys[in.Key()] = true
		frags = append(frags, Fragment{Input: in, Root: root})
	}
	var base *Transaction
	if from != 0 {
		var err error
		if base, err = s.Get(from); err != nil {
			return err
		}
	}
	if kept := splitBase(base, remove, keys).kept; len(kept) > 0 && !s.apartFromBase(base, frags) {
		_, roots, err := s.loadFragments(base, kept, true)
		if err != nil {
			return err
		}
		var bf []Fragment
		for i, in := range kept {
			bf = append(bf, Fragment{Input: in, Root: roots[i]})
		}
		frags = append(bf, frags...)
	}
	_, err := merge(frags, func(a, b *tree.Node) bool {
		// Same size, one side not yet hashed: cannot tell.
		return a.Size == b.Size && pending[hex.EncodeToString(a.Digest)] != pending[hex.EncodeToString(b.Digest)]
	})
	return err
}

// apartFromBase reports whether the new inputs (frags) cannot conflict with
// what base holds, as told by its image without loading its inputs: every
// new input is a tree or a dump placed at a prefix that the image lacks,
// every directory above it being a directory there (or missing). Such an
// input provides the prefix, what is under it, and directories above it,
// which merge. (Compose, which merges the base's inputs themselves, stays
// the authority: this only spares the pre-check loading them.)
func (s *State) apartFromBase(base *Transaction, frags []Fragment) bool {
	if base == nil || len(frags) == 0 {
		return false
	}
	for _, f := range frags {
		if f.Input.Kind != KindTree && f.Input.Kind != KindDump || path.Clean("/"+f.Input.Prefix) == "/" {
			return false
		}
	}
	img, closeImg, err := erofs.OpenFile(s.ImagePath(base), nil)
	if err != nil {
		return false
	}
	defer closeImg()
	for _, f := range frags {
		dir := img.RootNid()
		comps := strings.Split(strings.TrimPrefix(path.Clean("/"+f.Input.Prefix), "/"), "/")
		for i, c := range comps {
			nid, err := img.Lookup(dir, c)
			if errors.Is(err, fs.ErrNotExist) {
				break // nothing here or below
			}
			if err != nil || i == len(comps)-1 {
				return false // the prefix itself is there: merge to see
			}
			ino, err := img.Inode(nid)
			if err != nil || ino.Mode&tree.TypeMask != tree.TypeDir {
				return false
			}
			dir = nid
		}
	}
	return true
}

// CheckPackageConflicts checks, before anything is imported, the conflicts
// the packages' metadata declare among the inputs a compose would have:
// those of from (minus remove and minus those the new inputs replace) and
// the new ones.
func (s *State) CheckPackageConflicts(from uint64, remove []string, add []Input) error {
	keys := map[string]bool{}
	for _, in := range add {
		keys[in.Key()] = true
	}
	var base *Transaction
	if from != 0 {
		var err error
		if base, err = s.Get(from); err != nil {
			return err
		}
	}
	all := append(splitBase(base, remove, keys).kept, add...)
	if cs := PackageConflicts(all); len(cs) > 0 {
		return &ConflictError{Conflicts: cs}
	}
	return nil
}

// ParseTreeArg splits a --tree argument DIR[:PREFIX].
func ParseTreeArg(arg string) (dir, prefix string) {
	dir, prefix, _ = strings.Cut(arg, ":")
	if prefix == "" {
		prefix = "/"
	}
	return dir, path.Clean("/" + prefix)
}

// Tree imports a directory placed at prefix inside the image ("/" = its
// root, whose metadata then becomes the image root's).
func (im *Importer) Tree(ctx context.Context, dir, prefix string) (Fragment, error) {
	root, err := dirimport.Import(ctx, dir, dirimport.Options{Sink: im.s.IndexedSink(), KeepInline: true, Progress: im.Progress, XattrNamespaces: im.XattrNamespaces})
	if err != nil {
		return Fragment{}, err
	}
	return placedFragment(KindTree, dir, prefix, root)
}

// placedFragment is the fragment of a tree or dump input read from src
// (a directory or dump file), its tree placed at prefix.
func placedFragment(kind, src, prefix string, root *tree.Node) (Fragment, error) {
	prefix = path.Clean("/" + prefix)
	placed, err := PlaceAt(root, prefix)
	if err != nil {
		return Fragment{}, err
	}
	return Fragment{Input: Input{Kind: kind, Name: absPath(src), Prefix: prefix, Source: absPath(src)}, Root: placed}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Dump reads a composefs dump (composefs-dump(5), gzip-compressed or not)
// and places its tree at prefix. Its external files name their content by
// digest: content the store holds is used as it is; the rest is taken from
// objects, a digest store (mkcomposefs --digest-store, containers/storage)
// in which the dump's payload paths are looked up beneath the directory,
// and must hash to the dump's digest. Payloads are renamed to the store's
// layout. A file whose content is nowhere is an error naming it.
func (im *Importer) Dump(ctx context.Context, file, prefix, objects string) (Fragment, error) {
	root, err := readDumpFile(file)
	if err != nil {
		return Fragment{}, err
	}
	var objRoot *os.Root
	if objects != "" {
		if objRoot, err = os.OpenRoot(objects); err != nil {
			return Fragment{}, fmt.Errorf("dump %s: digest store: %w", file, err)
		}
		defer objRoot.Close()
	}
	err = root.Walk(func(n *tree.Node) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n.LinkTo != nil || n.Mode&tree.TypeMask != tree.TypeReg || n.Payload == "" {
			return nil
		}
		var want [32]byte
		known := len(n.Digest) == 32
		if known {
			copy(want[:], n.Digest)
			if im.s.store.Has(want) {
				n.Payload = cas.Payload(want)
				return nil
			}
		}
		if objRoot == nil {
			return fmt.Errorf("dump %s: %s: its content (%s) is not in the store; give the digest store that holds it", file, n.Path(), n.Payload)
		}
		f, err := objRoot.Open(n.Payload) // stays beneath the digest store
		if err != nil {
			return fmt.Errorf("dump %s: %s: %w", file, n.Path(), err)
		}
		got, err := im.s.IndexedSink().PutFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		f.Close()
		if err != nil {
			return fmt.Errorf("dump %s: %s: %w", file, n.Path(), err)
		}
		if known && got != want {
			return fmt.Errorf("dump %s: %s: object %s in %s has digest %x, the dump says %x", file, n.Path(), n.Payload, objects, got, want)
		}
		n.Digest, n.Payload = got[:], cas.Payload(got)
		return nil
	})
	if err != nil {
		return Fragment{}, err
	}
	return placedFragment(KindDump, file, prefix, root)
}

// readDumpFile parses a composefs dump file, gunzipping it if it starts
// with the gzip magic.
func readDumpFile(file string) (*tree.Node, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("dump %s: %w", file, err)
		}
		defer zr.Close()
		r = zr
	}
	root, err := erofs.ParseDump(r, erofs.DumpOptions{Name: file})
	if err != nil {
		return nil, err
	}
	return root, nil
}
