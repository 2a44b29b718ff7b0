package vm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Dracut is Debian's dracut (dracut-core, dracut) and udev, downloaded with
// apt-get download and unpacked with dpkg-deb -x, never installed: the
// dracut package conflicts with initramfs-tools, and udev is not on every
// host. Layer is their /usr (bin, sbin and lib of the packages moved below
// usr/ as on a merged-/usr system), laid over the host's /usr in a private
// mount namespace while dracut runs. udev is fetched at the version of the
// host's systemd, whose libsystemd-shared it links.
type Dracut struct {
	Layer    string // holds usr/
	Versions string // the packages and versions, e.g. "dracut-core=059-4 dracut=059-4 udev=252.38-1~deb12u1"
}

// FetchDracut returns the unpacked packages, cached in cacheDir under their
// versions.
func FetchDracut(cacheDir string) (*Dracut, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: dracut: not root (apt-get download, mount namespace)", ErrUnavailable)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return nil, fmt.Errorf("%w: dracut: %v", ErrUnavailable, err)
	}
	sd, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "systemd").Output()
	if err != nil || len(sd) == 0 {
		return nil, fmt.Errorf("%w: dracut: systemd is not installed (dpkg-query: %v)", ErrUnavailable, err)
	}
	dv, err := candidate("dracut-core")
	if err != nil {
		return nil, err
	}
	pkgs := []string{"dracut-core=" + dv, "dracut=" + dv, "udev=" + string(sd)}
	versions := strings.Join(pkgs, " ")
	dir := filepath.Join(cacheDir, "dracut-"+strings.NewReplacer("=", "_", " ", "-", "~", "_", ":", "_").Replace(versions))
	d := &Dracut{Layer: filepath.Join(dir, "layer"), Versions: versions}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	// One download at a time (test packages run in parallel).
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".dracut.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("dracut cache lock: %w", err)
	}
	if _, err := os.Stat(filepath.Join(d.Layer, "usr/lib/dracut/dracut-install")); err == nil {
		return d, nil
	}
	work, err := os.MkdirTemp(cacheDir, ".dracut-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o777) // apt drops privileges to _apt for downloads
	cmd := exec.Command("apt-get", append([]string{"download", "-qq"}, pkgs...)...)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: apt-get download %s: %v: %s", ErrUnavailable, versions, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != len(pkgs) {
		return nil, fmt.Errorf("apt-get download %s: %d .deb files, want %d", versions, len(debs), len(pkgs))
	}
	layer := filepath.Join(work, "entry", "layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		return nil, err
	}
	for _, deb := range debs {
		if out, err := exec.Command("dpkg-deb", "-x", deb, layer).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", deb, err, out)
		}
	}
	// Bookworm's packages still ship /lib, /bin, /sbin: on the merged-/usr
	// host those are usr/….
	for _, top := range []string{"lib", "bin", "sbin"} {
		src := filepath.Join(layer, top)
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if out, err := exec.Command("cp", "-a", src+"/.", filepath.Join(layer, "usr", top)+"/").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("merging %s into usr/: %v: %s", top, err, out)
		}
		if err := os.RemoveAll(src); err != nil {
			return nil, err
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(filepath.Join(work, "entry"), dir); err != nil {
		return nil, err
	}
	return d, nil
}

// candidate is apt's candidate version of pkg.
func candidate(pkg string) (string, error) {
	out, err := exec.Command("apt-cache", "policy", pkg).Output()
	if err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Candidate:" && f[1] != "(none)" {
				return f[1], nil
			}
		}
	}
	return "", fmt.Errorf("%w: apt-cache policy %s: no candidate (apt-get update?) %v", ErrUnavailable, pkg, err)
}

// DracutBuild describes one initramfs.
type DracutBuild struct {
	Kernel *Kernel
	// Layers are directories holding usr/ laid over the host's /usr above
	// dracut's (first is topmost): e.g. a make install DESTDIR, so dracut
	// finds mossfs and the 90mossfs module where a distribution puts them.
	Layers []string
	// Modules is dracut's -m list (only these and their dependencies).
	Modules []string
	// Include is a directory copied into the image's root (dracut --include).
	Include string
	Out     string
	// Args are more dracut arguments.
	Args []string
}

// kmoddir lays the kernel's cached modules out as a module directory with
// depmod's indexes, for dracut --kmoddir.
func kmoddir(k *Kernel, dir string) (string, error) {
	mods := filepath.Join(dir, "lib/modules", k.Release)
	if err := os.MkdirAll(filepath.Join(mods, "extra"), 0o755); err != nil {
		return "", err
	}
	for _, m := range k.Modules {
		if err := copyFile(filepath.Join(k.ModuleDir, m+".ko"), filepath.Join(mods, "extra", m+".ko")); err != nil {
			return "", err
		}
	}
	if out, err := exec.Command("depmod", "-b", dir, k.Release).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod: %v: %s", err, out)
	}
	return mods, nil
}

// inNamespace returns a command running script with sh in a private mount
// namespace in which the layers and d's packages lie over /usr.
func (d *Dracut) inNamespace(layers []string, script string, args ...string) (*exec.Cmd, error) {
	lower := []string{}
	for _, l := range layers {
		lower = append(lower, filepath.Join(l, "usr"))
	}
	lower = append(lower, filepath.Join(d.Layer, "usr"), "/usr")
	for _, l := range lower {
		if strings.ContainsAny(l, ":,") {
			return nil, fmt.Errorf("overlay layer %q: ':' and ',' cannot be used", l)
		}
	}
	full := `mount -t overlay dracut-usr -o "lowerdir=$OVL_LOWER" /usr || exit 1
` + script
	cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", full, "sh"}, args...)...)
	cmd.Env = append(os.Environ(), "OVL_LOWER="+strings.Join(lower, ":"))
	return cmd, nil
}

func combined(cmd *exec.Cmd, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

// Build runs dracut for b and returns its output (the log).
func (d *Dracut) Build(b DracutBuild) (string, error) {
	tmp, err := os.MkdirTemp("", "mossfs-dracut-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	km, err := kmoddir(b.Kernel, filepath.Join(tmp, "kmod"))
	if err != nil {
		return "", err
	}
	empty := filepath.Join(tmp, "conf.d")
	os.MkdirAll(empty, 0o755)
	os.MkdirAll(filepath.Join(tmp, "work"), 0o755)
	// No host configuration, no host-only detection: the image depends
	// only on what is listed here.
	args := []string{"--conf", "/dev/null", "--confdir", empty, "--tmpdir", filepath.Join(tmp, "work"),
		"--no-hostonly", "--nostrip", "--nohardlink", "--no-early-microcode", "--no-compress",
		"-m", strings.Join(b.Modules, " "), "--kmoddir", km, "--force"}
	if b.Include != "" {
		args = append(args, "--include", b.Include, "/")
	}
	args = append(args, b.Args...)
	args = append(args, b.Out, b.Kernel.Release)
	out, err := combined(d.inNamespace(b.Layers, `exec dracut "$@"`, args...))
	if err != nil {
		return string(out), fmt.Errorf("dracut: %v\n%s", err, out)
	}
	return string(out), nil
}

// List is lsinitrd's listing of img (its module list and files).
func (d *Dracut) List(img string) (string, error) {
	out, err := combined(d.inNamespace(nil, `exec lsinitrd "$1"`, img))
	if err != nil {
		return "", fmt.Errorf("lsinitrd %s: %v\n%s", img, err, out)
	}
	return string(out), nil
}

// Cat is the content of path in img (lsinitrd -f).
func (d *Dracut) Cat(img, path string) ([]byte, error) {
	cmd, err := d.inNamespace(nil, `exec lsinitrd -f "$2" "$1"`, img, path)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lsinitrd -f %s %s: %v\n%s", path, img, err, stderr.String())
	}
	return out, nil
}
