// Package vm is the host side of the kvmtests harness: it obtains a Debian
// kernel with fs-verity (resolved through its metapackage and cached), packs
// an initramfs (a newc cpio writer), makes ext4 disks with verity, runs QEMU
// and parses what the guest wrote to its second serial port.
package vm

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultMeta is the metapackage that names the current bookworm-security
// 6.12 cloud kernel. The versioned package it depends on changes with every
// ABI bump and old names leave the archive, so it is resolved on every run.
const DefaultMeta = "linux-image-6.12-cloud-amd64"

// DefaultModules are the modules the guest needs beyond what the cloud
// kernel has built in (ext4, fs-verity, fuse and virtio_pci are built in);
// their dependencies are added automatically.
var DefaultModules = []string{"erofs", "overlay", "virtio_blk", "loop"}

// Kernel is a cached guest kernel: vmlinuz plus decompressed modules in load order.
type Kernel struct {
	Meta      string   `json:"meta"`    // metapackage it was resolved from
	Package   string   `json:"package"` // versioned package, e.g. linux-image-6.12.117+deb12-cloud-amd64
	Release   string   `json:"release"` // uname -r
	Modules   []string `json:"modules"` // module names in load order (dependencies first)
	Dir       string   `json:"-"`       // cache entry directory
	Vmlinuz   string   `json:"-"`
	ModuleDir string   `json:"-"` // holds <name>.ko
}

const manifestName = "kernel.json"

// FetchKernel returns the kernel named by meta from cacheDir, downloading
// and unpacking it with apt-get download + dpkg-deb (nothing is installed)
// when the cache has no entry for the package meta currently resolves to.
// When apt cannot resolve meta (offline, no lists), the newest cached entry
// for meta is used.
func FetchKernel(cacheDir, meta string, modules []string) (*Kernel, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	pkg, rerr := resolveMeta(meta)
	if rerr != nil {
		if k, err := newestCached(cacheDir, meta, modules); err == nil {
			return k, nil
		}
		return nil, rerr
	}
	dir := filepath.Join(cacheDir, pkg)
	if k, err := loadCached(dir, modules); err == nil {
		return k, nil
	}
	if err := download(cacheDir, meta, pkg, modules); err != nil {
		// A newer kernel was announced but cannot be fetched (stale package
		// lists, no network): an older cached one still does the job.
		if k, cerr := newestCached(cacheDir, meta, modules); cerr == nil {
			return k, nil
		}
		return nil, err
	}
	return loadCached(dir, modules)
}

// resolveMeta finds the versioned kernel package meta depends on, running
// apt-get update once if the package lists do not know meta.
func resolveMeta(meta string) (string, error) {
	for attempt := 0; ; attempt++ {
		out, err := exec.Command("apt-cache", "depends", meta).Output()
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
					return f[1], nil
				}
			}
		}
		if attempt > 0 || os.Geteuid() != 0 {
			return "", fmt.Errorf("apt-cache depends %s: no linux-image dependency found (err %v)", meta, err)
		}
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %v: %s", err, out)
		}
	}
}

func loadCached(dir string, modules []string) (*Kernel, error) {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, err
	}
	var k Kernel
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, manifestName), err)
	}
	k.Dir = dir
	k.Vmlinuz = filepath.Join(dir, "vmlinuz")
	k.ModuleDir = filepath.Join(dir, "modules")
	have := map[string]bool{}
	for _, m := range k.Modules {
		have[m] = true
		if _, err := os.Stat(filepath.Join(k.ModuleDir, m+".ko")); err != nil {
			return nil, err
		}
	}
	for _, m := range modules {
		if !have[normModName(m)] {
			return nil, fmt.Errorf("cached kernel %s lacks module %s", dir, m)
		}
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, err
	}
	return &k, nil
}

func newestCached(cacheDir, meta string, modules []string) (*Kernel, error) {
	ents, err := os.ReadDir(cacheDir)
	if err != nil {
		return nil, err
	}
	var best *Kernel
	var bestTime int64
	for _, e := range ents {
		k, err := loadCached(filepath.Join(cacheDir, e.Name()), modules)
		if err != nil || k.Meta != meta {
			continue
		}
		if st, err := os.Stat(filepath.Join(k.Dir, manifestName)); err == nil && st.ModTime().UnixNano() > bestTime {
			best, bestTime = k, st.ModTime().UnixNano()
		}
	}
	if best == nil {
		return nil, errors.New("no cached kernel")
	}
	return best, nil
}

// download fetches pkg's -unsigned variant, keeps vmlinuz and the wanted
// modules (decompressed, with dependencies) and renames the entry into place.
func download(cacheDir, meta, pkg string, modules []string) error {
	work, err := os.MkdirTemp(cacheDir, ".dl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// apt drops privileges to _apt for downloads when it can.
	os.Chmod(work, 0o777)
	cmd := exec.Command("apt-get", "download", "-qq", pkg+"-unsigned")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s-unsigned: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s-unsigned: expected one .deb in %s, found %d", pkg, work, len(debs))
	}
	kroot := filepath.Join(work, "kroot")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], kroot).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v: %s", debs[0], err, out)
	}
	os.Remove(debs[0])
	rels, err := os.ReadDir(filepath.Join(kroot, "lib/modules"))
	if err != nil || len(rels) != 1 {
		return fmt.Errorf("%s: expected one lib/modules/<release> (%v)", debs[0], err)
	}
	release := rels[0].Name()
	modRoot := filepath.Join(kroot, "lib/modules", release)

	entry := filepath.Join(work, "entry")
	if err := os.MkdirAll(filepath.Join(entry, "modules"), 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(kroot, "boot", "vmlinuz-"+release), filepath.Join(entry, "vmlinuz")); err != nil {
		return err
	}
	order, err := resolveModules(modRoot, modules, filepath.Join(entry, "modules"))
	if err != nil {
		return err
	}
	k := Kernel{Meta: meta, Package: pkg, Release: release, Modules: order}
	data, _ := json.MarshalIndent(&k, "", "  ")
	if err := os.WriteFile(filepath.Join(entry, manifestName), append(data, '\n'), 0o644); err != nil {
		return err
	}
	dst := filepath.Join(cacheDir, pkg)
	os.RemoveAll(dst)
	return os.Rename(entry, dst)
}

func normModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// resolveModules decompresses the wanted modules and everything they depend
// on (the depends= field of each module's .modinfo section; Debian ships no
// modules.dep) into outDir as <name>.ko, and returns a load order in which
// every module follows its dependencies. Built-in modules are skipped.
func resolveModules(modRoot string, want []string, outDir string) ([]string, error) {
	builtin := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(modRoot, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(data)) {
			b := filepath.Base(l)
			b = strings.TrimSuffix(b, ".ko")
			builtin[normModName(b)] = true
		}
	}
	files := map[string]string{}
	err := filepath.WalkDir(modRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		for _, ext := range []string{".ko.xz", ".ko.zst", ".ko"} {
			if strings.HasSuffix(n, ext) {
				files[normModName(strings.TrimSuffix(n, ext))] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = normModName(name)
		if builtin[name] || state[name] == 2 {
			return nil
		}
		if state[name] == 1 {
			return fmt.Errorf("module dependency cycle at %s", name)
		}
		path, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found under %s", name, from, modRoot)
		}
		state[name] = 1
		data, err := decompressModule(path)
		if err != nil {
			return err
		}
		deps, err := ModuleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(outDir, name+".ko"), data, 0o644); err != nil {
			return err
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, m := range want {
		if err := visit(m, "the harness"); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func decompressModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".xz"):
		out, err := exec.Command("xz", "-dc", path).Output()
		if err != nil {
			return nil, fmt.Errorf("xz -dc %s: %w", path, err)
		}
		return out, nil
	case strings.HasSuffix(path, ".zst"):
		out, err := exec.Command("zstd", "-dc", path).Output()
		if err != nil {
			return nil, fmt.Errorf("zstd -dc %s: %w", path, err)
		}
		return out, nil
	}
	return os.ReadFile(path)
}

// ModuleDepends returns the depends= list of a kernel module's .modinfo section.
func ModuleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
		}
	}
	return deps, nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
