package vm

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// CpioWriter writes a cpio archive in the "newc" format the kernel unpacks
// into its initramfs: a 110-byte ASCII header (magic 070701 and thirteen
// 8-digit hex fields), the NUL-terminated name padded to 4 bytes, the data
// padded to 4 bytes, and a closing TRAILER!!! entry.
type CpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

// NewCpioWriter returns a writer that appends entries to w.
func NewCpioWriter(w io.Writer) *CpioWriter { return &CpioWriter{w: w, ino: 1} }

func (c *CpioWriter) entry(name string, mode uint32, nlink uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio: name %q contains NUL", name)
	}
	var hdr bytes.Buffer
	fmt.Fprintf(&hdr, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.ino++
	hdr.WriteString(name)
	hdr.WriteByte(0)
	pad(&hdr)
	hdr.Write(data)
	pad(&hdr)
	_, c.err = c.w.Write(hdr.Bytes())
	return c.err
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// Dir adds a directory.
func (c *CpioWriter) Dir(name string, perm fs.FileMode) error {
	return c.entry(name, 0o040000|uint32(perm.Perm()), 2, nil)
}

// File adds a regular file.
func (c *CpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.entry(name, 0o100000|uint32(perm.Perm()), 1, data)
}

// Symlink adds a symbolic link.
func (c *CpioWriter) Symlink(name, target string) error {
	return c.entry(name, 0o120000|0o777, 1, []byte(target))
}

// Close writes the trailer; it does not close the underlying writer.
func (c *CpioWriter) Close() error {
	return c.entry("TRAILER!!!", 0, 1, nil)
}

// Initramfs collects the files of an initramfs in memory; parent directories
// are created implicitly.
type Initramfs struct {
	entries map[string]irEntry
}

type irEntry struct {
	perm    fs.FileMode
	kind    byte // 'f', 'd', 'l'
	data    []byte
	srcPath string
}

// NewInitramfs returns an empty initramfs with the usual top-level directories.
func NewInitramfs() *Initramfs {
	r := &Initramfs{entries: map[string]irEntry{}}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "mnt", "lib/modules", "sysroot", "run", "etc"} {
		r.Dir(d)
	}
	return r
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// Dir adds a directory (0755).
func (r *Initramfs) Dir(p string) { r.entries[clean(p)] = irEntry{perm: 0o755, kind: 'd'} }

// File adds a file with the given content.
func (r *Initramfs) File(p string, perm fs.FileMode, data []byte) {
	r.entries[clean(p)] = irEntry{perm: perm, kind: 'f', data: data}
}

// FileFrom adds a host file; it is read when the archive is written.
func (r *Initramfs) FileFrom(p string, perm fs.FileMode, hostPath string) {
	r.entries[clean(p)] = irEntry{perm: perm, kind: 'f', srcPath: hostPath}
}

// Symlink adds a symbolic link.
func (r *Initramfs) Symlink(p, target string) {
	r.entries[clean(p)] = irEntry{perm: 0o777, kind: 'l', data: []byte(target)}
}

// WriteCpio writes the uncompressed newc archive, parents before children.
func (r *Initramfs) WriteCpio(w io.Writer) error {
	all := map[string]irEntry{}
	for p, e := range r.entries {
		all[p] = e
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				if _, ok := r.entries[d]; !ok {
					all[d] = irEntry{perm: 0o755, kind: 'd'}
				}
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	sort.Strings(names) // a parent sorts before its children
	cw := NewCpioWriter(w)
	for _, p := range names {
		e := all[p]
		var err error
		switch e.kind {
		case 'd':
			err = cw.Dir(p, e.perm)
		case 'l':
			err = cw.Symlink(p, string(e.data))
		default:
			data := e.data
			if e.srcPath != "" {
				if data, err = os.ReadFile(e.srcPath); err != nil {
					return fmt.Errorf("initramfs %s: %w", p, err)
				}
			}
			err = cw.File(p, e.perm, data)
		}
		if err != nil {
			return fmt.Errorf("initramfs %s: %w", p, err)
		}
	}
	return cw.Close()
}

// WriteFile writes the archive gzip-compressed to path.
func (r *Initramfs) WriteFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err := r.WriteCpio(zw); err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
