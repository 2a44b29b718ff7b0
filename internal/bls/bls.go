// Package bls writes Boot Loader Specification (type #1) entries for mossfs
// transactions: one entry per transaction, mossfs-<id>.conf in the entries
// directory ($BOOT/loader/entries), whose options carry moss.tx=<id>, the
// image digest (moss.digest=sha256:<hex>) and older listed transactions as
// moss.fallback=. The default entry is the "default" line of loader.conf in
// the entries directory's parent ($BOOT/loader/loader.conf), as read by
// systemd-boot.
package bls

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/internal/bootcmd"
	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/internal/smallfile"
)

// DefaultKeep is how many of the newest transactions get an entry.
const DefaultKeep = 5

const prefix = "mossfs-"

// EntryName is the file name of transaction id's entry.
func EntryName(id uint64) string { return prefix + strconv.FormatUint(id, 10) + ".conf" }

// EntryID parses an entry file name; ok is false for entries that are not mossfs's.
func EntryID(name string) (uint64, bool) {
	num, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	num, ok = strings.CutSuffix(num, ".conf")
	if !ok {
		return 0, false
	}
	id, err := bootcmd.ParseID(num)
	return id, err == nil
}

// LoaderConf returns the loader.conf beside an entries directory.
func LoaderConf(entriesDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(entriesDir)), "loader.conf")
}

// Entry is a BLS type #1 entry: ordered key/value lines ("initrd" may repeat).
type Entry struct {
	Lines [][2]string
}

// ParseEntry reads an entry; blank lines and # comments are dropped.
func ParseEntry(data []byte) Entry {
	var e Entry
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		e.Lines = append(e.Lines, [2]string{k, strings.TrimSpace(v)})
	}
	return e
}

// Get returns the first value of key.
func (e Entry) Get(key string) string {
	for _, l := range e.Lines {
		if l[0] == key {
			return l[1]
		}
	}
	return ""
}

// All returns every value of key.
func (e Entry) All(key string) []string {
	var out []string
	for _, l := range e.Lines {
		if l[0] == key {
			out = append(out, l[1])
		}
	}
	return out
}

// Bytes formats the entry.
func (e Entry) Bytes() []byte {
	var b strings.Builder
	for _, l := range e.Lines {
		b.WriteString(l[0] + " " + l[1] + "\n")
	}
	return []byte(b.String())
}

// Transaction is what an entry needs to know about a transaction.
type Transaction struct {
	ID    uint64
	Image string // hex fs-verity digest of the image ("" leaves moss.digest out)
}

// Config is the boot setup shared by all entries.
type Config struct {
	Title   string   // entry title prefix (default "mossfs")
	Linux   string   // kernel path relative to $BOOT
	Initrd  []string // initrd paths
	Options string   // kernel options other than the mossfs ones
	Keep    int      // entries to keep (default DefaultKeep)
}

// mossParams are the command-line parameters mossfs owns in an entry.
var mossParams = map[string]bool{"moss.tx": true, "moss.fstx": true, "moss.digest": true, "moss.fallback": true}

// StripOptions removes mossfs's own parameters and boot-loader-added ones
// (BOOT_IMAGE=, initrd=) from a command line, keeping the rest verbatim.
func StripOptions(cmdline string) string {
	var keep []string
	for _, w := range splitWords(cmdline) {
		p := bootcmd.Split(w)
		if len(p) == 1 && (mossParams[p[0].Key] || p[0].Key == "BOOT_IMAGE" || p[0].Key == "initrd") {
			continue
		}
		keep = append(keep, w)
	}
	return strings.Join(keep, " ")
}

// splitWords splits like bootcmd.Split but returns the raw words.
func splitWords(s string) []string {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
		if s == "" {
			return out
		}
		in := false
		i := 0
		for ; i < len(s); i++ {
			if strings.IndexByte(" \t\n\v\f\r", s[i]) >= 0 && !in {
				break
			}
			if s[i] == '"' {
				in = !in
			}
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}

func makeEntry(cfg Config, tx Transaction, fallback []uint64) Entry {
	title := cfg.Title
	if title == "" {
		title = "mossfs"
	}
	opts := strings.TrimSpace(cfg.Options + " moss.tx=" + strconv.FormatUint(tx.ID, 10))
	if tx.Image != "" {
		opts += " moss.digest=sha256:" + tx.Image
	}
	if len(fallback) > 0 {
		ids := make([]string, len(fallback))
		for i, f := range fallback {
			ids[i] = strconv.FormatUint(f, 10)
		}
		opts += " moss.fallback=" + strings.Join(ids, ",")
	}
	e := Entry{Lines: [][2]string{
		{"title", fmt.Sprintf("%s (transaction %d)", title, tx.ID)},
		{"version", strconv.FormatUint(tx.ID, 10)},
		{"sort-key", "mossfs"},
		{"linux", cfg.Linux},
	}}
	for _, i := range cfg.Initrd {
		e.Lines = append(e.Lines, [2]string{"initrd", i})
	}
	e.Lines = append(e.Lines, [2]string{"options", opts})
	return e
}

// Result says what Sync changed.
type Result struct {
	Written []string `json:"written"`
	Removed []string `json:"removed"`
	Kept    []string `json:"kept,omitempty"`
}

// Entries returns the mossfs entries in dir by transaction id.
func Entries(dir string) (map[uint64]Entry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bls: %w", err)
	}
	out := map[uint64]Entry{}
	for _, de := range ents {
		id, ok := EntryID(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("bls: %w", err)
		}
		out[id] = ParseEntry(data)
	}
	return out, nil
}

// Template returns the boot setup of the newest mossfs entry in dir (kernel,
// initrds, non-mossfs options), for when none is given.
func Template(dir string) (Config, bool) {
	ents, err := Entries(dir)
	if err != nil || len(ents) == 0 {
		return Config{}, false
	}
	var newest uint64
	for id := range ents {
		newest = max(newest, id)
	}
	e := ents[newest]
	return Config{Linux: e.Get("linux"), Initrd: e.All("initrd"), Options: StripOptions(e.Get("options"))}, e.Get("linux") != ""
}

// Sync writes entries for the newest cfg.Keep transactions of txs (each
// listing the older written ones as fallbacks, newest first) and removes
// mossfs entries of transactions that are gone or fell out of the newest
// Keep, except the current default entry's while its transaction exists.
// Entries of other boot loaders' files are never touched.
func Sync(dir string, txs []Transaction, cfg Config) (*Result, error) {
	if cfg.Linux == "" {
		return nil, errors.New("bls: no kernel given (linux path) and no existing mossfs entry to take it from")
	}
	keep := cfg.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bls: %w", err)
	}
	sorted := slices.Clone(txs)
	slices.SortFunc(sorted, func(a, b Transaction) int { return -cmp.Compare(a.ID, b.ID) })
	if len(sorted) > keep {
		sorted = sorted[:keep]
	}
	exists := map[uint64]bool{}
	for _, t := range txs {
		exists[t.ID] = true
	}
	def, _ := Default(dir)
	res := &Result{}
	listed := map[uint64]bool{}
	for i, t := range sorted {
		var fb []uint64
		for _, o := range sorted[i+1:] {
			fb = append(fb, o.ID)
		}
		name := EntryName(t.ID)
		if err := writeAtomic(filepath.Join(dir, name), makeEntry(cfg, t, fb).Bytes()); err != nil {
			return res, err
		}
		listed[t.ID] = true
		res.Written = append(res.Written, name)
	}
	old, err := Entries(dir)
	if err != nil {
		return res, err
	}
	ids := make([]uint64, 0, len(old))
	for id := range old {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if listed[id] {
			continue
		}
		name := EntryName(id)
		if exists[id] && def == name {
			res.Kept = append(res.Kept, name)
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("bls: %w", err)
		}
		res.Removed = append(res.Removed, name)
	}
	// The default must name an existing entry: point it at the newest
	// transaction when it names none or a removed one.
	if len(sorted) > 0 {
		if _, ok := EntryID(def); !ok || slices.Contains(res.Removed, def) {
			if def == "" || strings.HasPrefix(def, prefix) {
				if err := setDefaultLine(LoaderConf(dir), EntryName(sorted[0].ID)); err != nil {
					return res, err
				}
			}
		}
	}
	return res, syncDir(dir)
}

// Default returns the "default" value of the loader.conf beside dir ("" if none).
func Default(dir string) (string, error) {
	data, err := os.ReadFile(LoaderConf(dir))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("bls: %w", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "default" {
			return f[1], nil
		}
	}
	return "", nil
}

// SetDefault makes transaction tx's entry the default in the loader.conf
// beside the entries directory dir (other loader.conf lines are kept). If
// tx has no entry yet (a rollback to a transaction older than the listed
// ones), one is made from the newest mossfs entry with moss.tx replaced and
// the digest pin dropped; it fails if there is no entry to start from.
func SetDefault(dir string, tx uint64) error {
	f, err := DefaultFile(dir, tx)
	if err != nil {
		return err
	}
	if err := durable.Write(f); err != nil {
		return fmt.Errorf("bls: %w", err)
	}
	return nil
}

// DefaultFile prepares what SetDefault writes: it writes tx's entry if
// there is none (durably, before anything names it), and returns the new
// loader.conf for the caller to write in a batch (package durable).
func DefaultFile(dir string, tx uint64) (durable.File, error) {
	name := EntryName(tx)
	if _, err := os.Stat(filepath.Join(dir, name)); errors.Is(err, os.ErrNotExist) {
		cfg, ok := Template(dir)
		if !ok {
			return durable.File{}, fmt.Errorf("bls: no entry for transaction %d in %s and no mossfs entry to copy (run mossfs bls)", tx, dir)
		}
		if err := writeAtomic(filepath.Join(dir, name), makeEntry(cfg, Transaction{ID: tx}, nil).Bytes()); err != nil {
			return durable.File{}, err
		}
		if err := syncDir(dir); err != nil {
			return durable.File{}, err
		}
	} else if err != nil {
		return durable.File{}, fmt.Errorf("bls: %w", err)
	}
	return defaultLineFile(LoaderConf(dir), name)
}

func setDefaultLine(conf, value string) error {
	f, err := defaultLineFile(conf, value)
	if err != nil {
		return err
	}
	if err := durable.Write(f); err != nil {
		return fmt.Errorf("bls: %w", err)
	}
	return nil
}

// defaultLineFile returns loader.conf with its default line set to value.
func defaultLineFile(conf, value string) (durable.File, error) {
	data, err := smallfile.Read(conf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return durable.File{}, fmt.Errorf("bls: %w", err)
	}
	var lines []string
	done := false
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if f := strings.Fields(l); len(f) >= 1 && f[0] == "default" {
			if done {
				continue
			}
			l, done = "default "+value, true
		}
		if l != "" || len(lines) > 0 {
			lines = append(lines, l)
		}
	}
	if !done {
		lines = append([]string{"default " + value}, lines...)
	}
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return durable.File{}, fmt.Errorf("bls: %w", err)
	}
	// Through a swap file (see package durable): the default changes on
	// every switch.
	return durable.File{Path: conf, Data: []byte(strings.Join(lines, "\n") + "\n"), Perm: 0o644, Swap: true}, nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-mossfs-")
	if err != nil {
		return fmt.Errorf("bls: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(0o644), f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("bls: writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("bls: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bls: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("bls: fsync %s: %w", dir, err)
	}
	return nil
}

// StandardEntryDirs are where boot loaders look for BLS entries, relative
// to the root directory: $BOOT and the ESP as systemd-boot mounts them.
var StandardEntryDirs = []string{"boot/loader/entries", "efi/loader/entries", "boot/efi/loader/entries"}

// FindEntryDirs returns the standard entries directories under root
// ("/" on a running system) that hold at least one mossfs entry.
//
// It reads only names, and each directory only as far as its first mossfs
// entry: mossfs switch looks on every switch, and a boot partition can hold
// many entries.
func FindEntryDirs(root string) []string {
	var out []string
	for _, d := range StandardEntryDirs {
		dir := filepath.Join(root, d)
		if hasEntry(dir) {
			out = append(out, dir)
		}
	}
	return out
}

// hasEntry reports whether dir holds a mossfs entry (a regular file named
// as EntryName names them).
func hasEntry(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(64)
		for _, de := range ents {
			if _, ok := EntryID(de.Name()); ok && de.Type().IsRegular() {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

// SetDefaultFound makes tx the default in every entries directory
// FindEntryDirs finds under root and returns them: what mossfs switch and
// rollback call after a switch, so the next boot starts the transaction
// now running. No mossfs entries anywhere is not an error (nothing to do).
func SetDefaultFound(root string, tx uint64) ([]string, error) {
	dirs, files, err := DefaultFilesFound(root, tx)
	if err != nil {
		return dirs, err
	}
	if err := durable.Write(files...); err != nil {
		return dirs, fmt.Errorf("bls: %w", err)
	}
	return dirs, nil
}

// DefaultFilesFound is SetDefaultFound's preparation (DefaultFile for each
// directory found), for a batch of durable writes.
func DefaultFilesFound(root string, tx uint64) ([]string, []durable.File, error) {
	dirs := FindEntryDirs(root)
	var files []durable.File
	for _, d := range dirs {
		f, err := DefaultFile(d, tx)
		if err != nil {
			return dirs, nil, err
		}
		files = append(files, f)
	}
	return dirs, files, nil
}
