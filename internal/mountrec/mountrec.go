// Package mountrec keeps the records of mossfs mounts in a state root:
// <root>/mounts/<name>.json, one per mount target, written atomically when
// mossfs mounts or switches a target and removed when it unmounts it. The
// state package reads them (State.Mounts) to refuse removing a mounted
// transaction; `mossfs status` joins them with the kernel's mount table.
//
// Records are only a hint about the past: a reboot leaves them behind, so
// Live checks each against /proc/self/mountinfo.
package mountrec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mossfs/mossfs/internal/durable"
	"golang.org/x/sys/unix"
)

// Record describes one mount. The JSON field names are those the state
// package reads (tx, image, target, driver).
type Record struct {
	Target string `json:"target"`
	// Tx is the mounted transaction (0: an image mounted directly).
	Tx uint64 `json:"tx"`
	// Image is the hex fs-verity digest of the image ("" when unknown).
	Image     string `json:"image,omitempty"`
	ImagePath string `json:"image_path,omitempty"`
	Objects   string `json:"objects,omitempty"`
	// Driver is "overlay" or "fuse".
	Driver string `json:"driver"`
	// Verity is the effective policy: off, on or require.
	Verity string `json:"verity,omitempty"`
	// Method is how the overlay was built (overlay.Method).
	Method string    `json:"method,omitempty"`
	Time   time.Time `json:"time"`
	// BootID is the kernel's boot id when the mount was made: a record of
	// an earlier boot describes a mount that is gone (see Stale).
	BootID string `json:"boot_id,omitempty"`
}

// BootID returns the running kernel's boot id ("" if unknown), which
// changes at every boot.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Stale reports whether the record was written during an earlier boot, so
// that the mount it describes no longer exists. Records without a boot id
// (written by older versions) are never stale.
func (r Record) Stale() bool { return StaleBootID(r.BootID) }

// StaleBootID reports whether a record's boot id names an earlier boot.
func StaleBootID(id string) bool {
	if id == "" {
		return false
	}
	cur := BootID()
	return cur != "" && cur != id
}

// Dir returns the records directory of a state root.
func Dir(root string) string { return filepath.Join(root, "mounts") }

// Name returns the record file name for a target: the path without its
// outer slashes, inner slashes as '-' ("/usr" → "usr.json", "/" → "root.json"),
// as the state package names them.
func Name(target string) string {
	t := strings.Trim(filepath.Clean(target), "/")
	if t == "" {
		t = "root"
	}
	return strings.ReplaceAll(t, "/", "-") + ".json"
}

// Write stores r atomically and durably (temporary file, fsync, rename,
// fsync of the directory).
func Write(root string, r Record) error {
	f, err := File(root, r)
	if err != nil {
		return err
	}
	if err := durable.Write(f); err != nil {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// File returns the record file of r for a batch of durable writes (see
// package durable), creating the records directory if needed. It fills in
// r's time and boot id as Write does.
func File(root string, r Record) (durable.File, error) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	if r.BootID == "" {
		r.BootID = BootID()
	}
	dir := Dir(root)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return durable.File{}, fmt.Errorf("mount record: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return durable.File{}, err
	}
	return durable.File{Path: filepath.Join(dir, Name(r.Target)), Data: append(data, '\n'), Perm: 0o600}, nil
}

// Remove deletes the record of target (no error if there is none).
func Remove(root, target string) error {
	err := os.Remove(filepath.Join(Dir(root), Name(target)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// Get returns the record of target, if any.
func Get(root, target string) (Record, bool, error) {
	path := filepath.Join(Dir(root), Name(target))
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("mount record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, false, fmt.Errorf("mount record %s: %w", path, err)
	}
	return r, true, nil
}

// List returns every record of the state root, sorted by target. Files
// whose names start with "." (temporary files, the lock) are skipped.
func List(root string) ([]Record, error) {
	ents, err := os.ReadDir(Dir(root))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mount records: %w", err)
	}
	var out []Record
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(Dir(root), e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("mount records: %w", err)
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("mount record %s: %w", path, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out, nil
}

// Lock serialises mount changes of a state root (flock on mounts/.lock).
// It blocks until the lock is free; call the returned function to release.
func Lock(root string) (func(), error) {
	if err := os.MkdirAll(Dir(root), 0o700); err != nil {
		return nil, fmt.Errorf("mount lock: %w", err)
	}
	path := filepath.Join(Dir(root), ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mount lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mount lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
