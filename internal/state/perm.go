package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/mossfs/mossfs/internal/durable"
)

// Who may read what under the state root.
//
// The store holds every file of every transaction, and its images, inputs
// and fragments list every path, including those inside 0700 directories.
// So everything under the state root is private to its owner (root for the
// system store, the user for a user's own store): directories 0700, files
// 0600, objects included. Nothing that mounts needs more: overlayfs reads
// the data-only layer with the mounter's credentials, and the FUSE daemon
// runs as the store's owner.
//
// The exceptions, which `mossfs status` and `moss-compose state list` read as
// any user, are listed in PublicRecords: they hold ids, times, package names
// and versions and digests, never file names or contents.
//
// Code that adds something to the state root creates its directories with
// MkdirPrivate (or State.PrivateDir) and writes files with mode 0600; it
// adds to PublicRecords only a record that holds no file name and no
// content. Whatever is not listed there (nor one of moss's own MossEntries)
// is made private (directory modes only, see tightenModes) when its owner
// opens the state root, with one line on Warnings saying so, and
// `moss-compose verify` reports it.
var PublicRecords = []string{
	"state.json",          // format marker
	"active",              // the active transaction id
	"transactions",        // the directory (its <id>.inputs/ are private)
	"transactions/*.json", // transaction metadata: ids, times, packages, digests
}

// publicTemps are the temporary names PublicRecords are written under
// (publish writes a transaction's metadata with its final mode, 0644, then
// renames it): what a crash leaves under them holds only a public record,
// and gc removes it, so it is not reported as exposed. The swap file of
// active (see package durable) holds the active transaction before the
// last switch, the same kind of record, and stays.
var publicTemps = []string{"transactions/.tmp-meta-*", durable.SwapName("active")}

// MossEntries are the names moss itself keeps in the same directory (the
// default state root /.moss is moss's): mossfs never changes their modes
// nor reports them.
var MossEntries = []string{"assets", "cache", "db", "repo", "root", ".moss-lockfile"}

// Modes of what is private to the state root's owner.
const (
	PrivateDirMode  = 0o700
	PrivateFileMode = 0o600
	// publicDirMode and publicFileMode are those of PublicRecords.
	publicDirMode  = 0o755
	publicFileMode = 0o644
)

// Warnings receives the one line saying that an existing state root's
// modes were tightened.
var Warnings io.Writer = os.Stderr

// IsPublic reports whether rel (a slash-separated path relative to the
// state root) is one of PublicRecords, or the temporary name of one.
func IsPublic(rel string) bool {
	for _, p := range PublicRecords {
		if ok, _ := filepath.Match(p, rel); ok {
			return true
		}
	}
	for _, p := range publicTemps {
		if ok, _ := filepath.Match(p, rel); ok {
			return true
		}
	}
	return false
}

// MkdirPrivate creates root/rel and any missing directories between root
// and it with mode 0700 (root itself must exist), and returns its path.
// Existing directories keep their mode.
func MkdirPrivate(root, rel string) (string, error) {
	dir := root
	for _, c := range strings.Split(filepath.ToSlash(filepath.Clean(rel)), "/") {
		if c == "" || c == "." {
			continue
		}
		dir = filepath.Join(dir, c)
		if err := os.Mkdir(dir, PrivateDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("state: %w", err)
		}
	}
	return dir, nil
}

// PrivateDir creates (if needed) the directory rel under the state root,
// private to its owner, and returns its path.
func (s *State) PrivateDir(rel string) (string, error) { return MkdirPrivate(s.root, rel) }

// ownedByUs reports whether this process runs as the owner of root (or as
// root): only then is the state root opened for writing, and tightened.
func ownedByUs(root string) bool {
	st, err := os.Stat(root)
	if err != nil {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	euid := os.Geteuid()
	return ok && (euid == 0 || uint32(euid) == sys.Uid)
}

// Exposed lists what under the state root others can reach beyond
// PublicRecords: top-level entries and transaction inputs with group or
// other permission bits, and the content store's objects directory.
// Paths are relative to root. Only directory modes (and the modes of
// top-level files) are looked at: never every object.
func Exposed(root string) ([]string, error) { return exposed(root, true) }

// exposed is Exposed; without deep, only the top-level entries are looked
// at (a few stats, what every Open pays), not transactions/ (one stat per
// transaction and per inputs directory).
func exposed(root string, deep bool) ([]string, error) {
	var out []string
	check := func(rel string, fi fs.FileInfo) {
		if fi.Mode()&fs.ModeSymlink != 0 || IsPublic(rel) || slices.Contains(MossEntries, rel) {
			return
		}
		if fi.Mode().Perm()&0o077 != 0 {
			out = append(out, fmt.Sprintf("%s (mode %04o)", rel, fi.Mode().Perm()))
		}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", root, err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		check(e.Name(), fi)
	}
	if !deep {
		return out, nil
	}
	tx, err := os.ReadDir(filepath.Join(root, "transactions"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state %s: %w", root, err)
	}
	for _, e := range tx {
		if fi, err := e.Info(); err == nil {
			check("transactions/"+e.Name(), fi)
		}
	}
	for _, rel := range []string{"cas/objects"} {
		if fi, err := os.Lstat(filepath.Join(root, rel)); err == nil {
			check(rel, fi)
		}
	}
	return out, nil
}

// tightenModes makes private what Exposed finds, by chmod: 0700 for
// directories, 0600 for files, and returns what it changed. It never walks the objects: a directory's
// mode guards everything below it. Failures (a read-only file system, as
// the initramfs sees /sysroot) leave the modes as they are.
//
// Only the top-level entries are looked at on every open; transactions/ is
// looked at only when one of them was exposed (a store from before this
// rule: compose makes the inputs directories private).
func tightenModes(root string) []string {
	exposed, err := exposed(root, false)
	if err != nil || len(exposed) == 0 {
		return nil
	}
	if exposed, err = Exposed(root); err != nil {
		return nil
	}
	var done []string
	n := 0
	for _, e := range exposed {
		rel, _, _ := strings.Cut(e, " (mode ")
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		mode := os.FileMode(PrivateFileMode)
		if fi.IsDir() {
			mode = PrivateDirMode
		}
		if os.Chmod(p, mode) == nil {
			n++
			done = append(done, e)
		}
	}
	if n > 0 {
		fmt.Fprintf(Warnings, "mossfs: state root %s: made %d entries private to their owner (they were readable by others: %s)\n",
			root, n, summarize(done))
	}
	return done
}

func summarize(list []string) string {
	if len(list) <= 4 {
		return strings.Join(list, ", ")
	}
	return strings.Join(list[:4], ", ") + fmt.Sprintf(", … (%d more)", len(list)-4)
}
