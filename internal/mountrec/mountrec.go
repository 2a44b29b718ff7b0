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
	"strconv"
	"strings"
	"time"

	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/internal/jsonpeek"
	"github.com/mossfs/mossfs/internal/smallfile"
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
	b, err := smallfile.Read("/proc/sys/kernel/random/boot_id")
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
	data, ok := encode(r)
	if !ok {
		var err error
		if data, err = json.MarshalIndent(r, "", "  "); err != nil {
			return durable.File{}, err
		}
	}
	// Through a swap file (see package durable): a target's record is
	// replaced on every switch.
	return durable.File{Path: filepath.Join(dir, Name(r.Target)), Data: append(data, '\n'), Perm: 0o600, Swap: true}, nil
}

// encode returns r as json.MarshalIndent(r, "", "  ") does, without
// encoding/json (see package jsonpeek: a switch would pay for its first
// use), when every string is plain: printable ASCII without the characters
// encoding/json escapes ('"', '\\', '<', '>', '&'). Otherwise it says no.
func encode(r Record) ([]byte, bool) {
	if y := r.Time.Year(); y < 0 || y > 9999 {
		return nil, false
	}
	b := make([]byte, 0, 512)
	b = append(b, "{\n"...)
	field := func(name, val string, omitEmpty bool) bool {
		if val == "" && omitEmpty {
			return true
		}
		for i := 0; i < len(val); i++ {
			if c := val[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
		b = append(b, `  "`...)
		b = append(b, name...)
		b = append(b, `": "`...)
		b = append(b, val...)
		b = append(b, "\",\n"...)
		return true
	}
	ok := field("target", r.Target, false)
	b = append(b, `  "tx": `...)
	b = strconv.AppendUint(b, r.Tx, 10)
	b = append(b, ",\n"...)
	ok = ok && field("image", r.Image, true) && field("image_path", r.ImagePath, true) &&
		field("objects", r.Objects, true) && field("driver", r.Driver, false) &&
		field("verity", r.Verity, true) && field("method", r.Method, true) &&
		field("time", r.Time.Format(time.RFC3339Nano), false) && field("boot_id", r.BootID, true)
	if !ok {
		return nil, false
	}
	// The last member has no comma.
	b = append(b[:len(b)-2], "\n}"...)
	return b, true
}

// Remove deletes the record of target (no error if there is none), and
// its swap file.
func Remove(root, target string) error {
	err := os.Remove(filepath.Join(Dir(root), Name(target)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount record: %w", err)
	}
	if err := os.Remove(filepath.Join(Dir(root), durable.SwapName(Name(target)))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// Peek returns how the mount recorded for target was made (its driver,
// verity and method), if there is a record whose members are plain,
// without encoding/json (see package jsonpeek). mossfs switch writes the
// new record before its mount, made as the last one was (a mount that
// comes out otherwise writes it again).
func Peek(root, target string) (driver, verity, method string, ok bool) {
	data, err := smallfile.Read(filepath.Join(Dir(root), Name(target)))
	if err != nil {
		return "", "", "", false
	}
	vals, ok := jsonpeek.Members(data, "driver", "verity", "method")
	if !ok {
		return "", "", "", false
	}
	driver, okD := jsonpeek.String(vals[0])
	verity, okV := jsonpeek.String(vals[1])
	method, okM := jsonpeek.String(vals[2])
	return driver, verity, method, okD && (okV || vals[1] == nil) && (okM || vals[2] == nil)
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
	path := filepath.Join(Dir(root), ".lock")
	// A bare descriptor: an os.File would try the poller first (five more
	// system calls, on every switch). The directory is made only when the
	// lock file cannot be opened for want of it.
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err == unix.ENOENT {
		if err := os.MkdirAll(Dir(root), 0o700); err != nil {
			return nil, fmt.Errorf("mount lock: %w", err)
		}
		fd, err = unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("mount lock: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount lock %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}
