package mounttuck

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	ID, Parent   int
	Dev          string // major:minor
	Root         string // root of the mount within its filesystem
	MountPoint   string
	Options      string // per-mount options
	Optional     []string
	FSType       string
	Source       string
	SuperOptions string
}

// Shared returns the peer group of a shared mount (0: not shared).
func (m MountEntry) Shared() int { return m.optional("shared:") }

// Master returns the peer group a slave mount receives from (0: none).
func (m MountEntry) Master() int { return m.optional("master:") }

func (m MountEntry) optional(prefix string) int {
	for _, o := range m.Optional {
		if v, ok := strings.CutPrefix(o, prefix); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// ReadMountInfo parses the mount table of the calling thread's mount
// namespace (/proc/thread-self/mountinfo: threads of one process can be in
// different namespaces, and /proc/self shows the main thread's).
func ReadMountInfo() ([]MountEntry, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		e, err := parseMountInfoLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("/proc/thread-self/mountinfo:%d: %w", line, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/proc/thread-self/mountinfo: %w", err)
	}
	return out, nil
}

func parseMountInfoLine(s string) (MountEntry, error) {
	var e MountEntry
	f := strings.Fields(s)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || len(f) < sep+3 {
		return e, fmt.Errorf("malformed line %q", s)
	}
	var err error
	if e.ID, err = strconv.Atoi(f[0]); err != nil {
		return e, fmt.Errorf("mount id %q: %w", f[0], err)
	}
	if e.Parent, err = strconv.Atoi(f[1]); err != nil {
		return e, fmt.Errorf("parent id %q: %w", f[1], err)
	}
	e.Dev = f[2]
	e.Root = unescapeOctal(f[3])
	e.MountPoint = unescapeOctal(f[4])
	e.Options = f[5]
	e.Optional = f[6:sep]
	e.FSType = unescapeOctal(f[sep+1])
	e.Source = unescapeOctal(f[sep+2])
	if len(f) > sep+3 {
		e.SuperOptions = f[sep+3]
	}
	return e, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline
// and backslash in mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsAt returns the mounts whose mount point is path, bottom first.
func MountsAt(path string) ([]MountEntry, error) {
	all, err := ReadMountInfo()
	if err != nil {
		return nil, err
	}
	var out []MountEntry
	for _, m := range all {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out, nil
}
