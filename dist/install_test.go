package dist

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// debianVars is the layout TestMakeInstall checks (explicit, so the result
// does not depend on the host).
var debianVars = []string{"PREFIX=/usr", "ZSHCOMPDIR=/usr/share/zsh/vendor-completions"}

var (
	installOnce  sync.Once
	installDest  string
	installFiles []string
	installDir   string
)

// installed is make install with debianVars, run once for the package's tests.
func installed(t *testing.T) (string, []string) {
	t.Helper()
	installOnce.Do(func() {
		var err error
		if installDir, err = os.MkdirTemp("", "mossfs-install-"); err != nil {
			t.Fatal(err)
		}
		installDest, installFiles = makeInstallIn(t, installDir, debianVars...)
	})
	if installDest == "" {
		t.Fatal("make install failed in an earlier test")
	}
	return installDest, installFiles
}

func TestMain(m *testing.M) {
	code := m.Run()
	if installDir != "" {
		os.RemoveAll(installDir)
	}
	os.Exit(code)
}

// repoRoot is the directory holding go.mod (the tests run in dist/).
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeInstall runs make install into an empty DESTDIR with a private BIN
// (the work tree's bin/ is left alone) and returns DESTDIR and every file
// and symlink under it, relative and sorted.
func makeInstall(t *testing.T, vars ...string) (string, []string) {
	return makeInstallIn(t, t.TempDir(), vars...)
}

func makeInstallIn(t *testing.T, dir string, vars ...string) (string, []string) {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make: %v", err)
	}
	dest, bin := filepath.Join(dir, "dest"), filepath.Join(dir, "bin")
	run(t, repoRoot(t), "make", append([]string{"--no-print-directory", "install", "DESTDIR=" + dest, "BIN=" + bin}, vars...)...)
	var files []string
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dest, p)
			files = append(files, "/"+rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return dest, files
}

// commandPaths asks a program's own --help for its command tree (the
// oracle for which man pages must exist): "prog", "prog sub", "prog sub
// subsub", … for every command cobra lists as available, help aside.
func commandPaths(t *testing.T, bin string, path []string) [][]string {
	t.Helper()
	out, err := exec.Command(bin, append(path[1:], "--help")...).Output()
	if err != nil {
		t.Fatalf("%s --help: %v", strings.Join(path, " "), err)
	}
	paths := [][]string{path}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	in := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasSuffix(l, "Commands:"):
			in = true
		case in && strings.TrimSpace(l) == "":
			in = false
		case in:
			f := strings.Fields(l)
			// "moss-compose image" hands its arguments to moss-oci
			// image: its subcommands' pages are moss-oci-image-*.1.
			switch {
			case len(f) == 0 || f[0] == "help":
			case len(path) == 1 && path[0] == "moss-compose" && f[0] == "image":
				paths = append(paths, append(slices.Clone(path), f[0]))
			default:
				paths = append(paths, commandPaths(t, bin, append(slices.Clone(path), f[0]))...)
			}
		}
	}
	return paths
}

// TestMakeInstall: make install DESTDIR=… into an empty directory installs
// exactly the expected files (Debian layout, PREFIX=/usr): the binaries,
// the trigger unit and its preset, the dracut module, one man page per
// command the programs list in their --help, and the bash, zsh and fish
// completions; the units pass systemd-analyze verify, the man pages name
// their command, and mossfs carries no man page generator.
func TestMakeInstall(t *testing.T) {
	dest, got := installed(t)
	want := []string{
		"/usr/bin/mkcomposefs",
		"/usr/bin/moss-compose",
		"/usr/bin/moss-oci",
		"/usr/bin/mossfs",
		"/usr/lib/dracut/modules.d/90mossfs/module-setup.sh",
		"/usr/lib/dracut/modules.d/90mossfs/mossfs-boot.service",
		"/usr/lib/systemd/system-preset/80-mossfs.preset",
		"/usr/lib/systemd/system/mossfs-triggers.service",
	}
	pages := map[string][]string{}
	for _, prog := range []string{"mossfs", "moss-compose", "moss-oci"} {
		want = append(want,
			"/usr/share/bash-completion/completions/"+prog,
			"/usr/share/zsh/vendor-completions/_"+prog,
			"/usr/share/fish/vendor_completions.d/"+prog+".fish")
		for _, p := range commandPaths(t, filepath.Join(dest, "usr/bin", prog), []string{prog}) {
			page := "/usr/share/man/man1/" + strings.Join(p, "-") + ".1"
			want = append(want, page)
			pages[page] = p
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		for _, f := range got {
			if !slices.Contains(want, f) {
				t.Errorf("unexpected file installed: %s", f)
			}
		}
		for _, f := range want {
			if !slices.Contains(got, f) {
				t.Errorf("missing: %s", f)
			}
		}
	}
	if len(pages) < 10 {
		t.Errorf("only %d man pages expected from --help: the oracle is broken", len(pages))
	}

	// Modes and the multi-call link.
	for _, f := range got {
		st, err := os.Lstat(filepath.Join(dest, f))
		if err != nil {
			t.Fatal(err)
		}
		wantMode := fs.FileMode(0o644)
		switch {
		case f == "/usr/bin/mkcomposefs":
			if l, err := os.Readlink(filepath.Join(dest, f)); err != nil || l != "moss-compose" {
				t.Errorf("%s: link to %q (%v), want moss-compose", f, l, err)
			}
			continue
		case strings.HasPrefix(f, "/usr/bin/"), strings.HasSuffix(f, ".sh"):
			wantMode = 0o755
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != wantMode {
			t.Errorf("%s: mode %v, want regular %v", f, st.Mode(), wantMode)
		}
	}
	run(t, dest, filepath.Join(dest, "usr/bin/mkcomposefs"), "--help")
	run(t, dest, "bash", "-n", filepath.Join(dest, "usr/lib/dracut/modules.d/90mossfs/module-setup.sh"))

	// Each page is a roff page titled after its own command.
	for page, p := range pages {
		data, err := os.ReadFile(filepath.Join(dest, page))
		if err != nil {
			t.Fatal(err)
		}
		title := `.TH "` + strings.ToUpper(strings.Join(p, "-")) + `" "1"`
		if !strings.Contains(string(data), title) || !strings.Contains(string(data), ".SH SYNOPSIS") {
			t.Errorf("%s: no %s header or synopsis:\n%.300s", page, title, data)
		}
	}

	// The installed mossfs has neither the generator command nor its libraries.
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/mossfs"), "gen-docs", t.TempDir()).CombinedOutput(); err == nil {
		t.Errorf("installed mossfs has a gen-docs command:\n%s", out)
	}
	mods := run(t, dest, "go", "version", "-m", filepath.Join(dest, "usr/bin/mossfs"))
	for _, lib := range []string{"go-md2man", "blackfriday", "cobra/doc"} {
		if strings.Contains(mods, lib) {
			t.Errorf("installed mossfs links %s", lib)
		}
	}

	// systemd's own parser checks the units (unknown keys, missing
	// executables, dependencies) against the installed tree.
	verifyUnit(t, dest, "mossfs-triggers.service", "")
	verifyUnit(t, dest, "mossfs-boot.service", "/usr/lib/dracut/modules.d/90mossfs/mossfs-boot.service")
}

// verifyUnit runs systemd-analyze verify on unit within root; from, when
// set, is copied into root's unit directory first (the initrd unit is
// installed in the dracut module, not in the host's unit path). Anything
// systemd-analyze prints is a failure: unknown keys are only warnings.
func verifyUnit(t *testing.T, root, unit, from string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze (package systemd): %v", err)
	}
	p := filepath.Join(root, "usr/lib/systemd/system", unit)
	if from != "" {
		data, err := os.ReadFile(filepath.Join(root, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(p)
	}
	out, err := exec.Command(sa, "verify", "--man=no", "--recursive-errors=no", "--root="+root, p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// TestMakeInstallPrefix: PREFIX moves everything (the AerynOS zsh
// directory is the default off Debian; here it is asked for explicitly).
func TestMakeInstallPrefix(t *testing.T) {
	_, got := makeInstall(t, "PREFIX=/usr/local", "ZSHCOMPDIR=/usr/local/share/zsh/site-functions")
	for _, want := range []string{
		"/usr/local/bin/mossfs",
		"/usr/local/lib/systemd/system/mossfs-triggers.service",
		"/usr/local/lib/dracut/modules.d/90mossfs/module-setup.sh",
		"/usr/local/share/man/man1/mossfs-switch.1",
		"/usr/local/share/zsh/site-functions/_mossfs",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, f := range got {
		if !strings.HasPrefix(f, "/usr/local/") {
			t.Errorf("%s is outside PREFIX", f)
		}
	}
}
