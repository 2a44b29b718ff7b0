package kvmtests

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

// packagesInVM are the packages whose own test suites also run inside the
// VM, where fs-verity exists: their verity paths (Enable/Measure, objects
// with verity, verity=require mounts) are skipped or take the "not
// supported" branch on the host. TMPDIR is on the guest's ext4 disk (verity
// feature on), so t.TempDir() stores get fs-verity; mkfs.erofs and the
// fsverity CLI are copied in with their libraries as oracles.
var packagesInVM = []struct {
	pkg   string
	flags string
}{
	// The 100 MiB digest comparison takes minutes under TCG; the host runs it.
	{"fsverity", "-test.skip '^TestAgainstFsverityTool$'"},
	{"cas", ""},
	{"overlay", ""},
	{"mounttuck", ""},
}

// pkgTimeout is each suite's -test.timeout in the guest, and
// packagesTimeout the boot's. With the host at load 15-17 the cas suite
// took 134 s in the guest (the boot then ran into its old 5-minute limit
// before mounttuck had finished); these leave about four times that.
const (
	pkgTimeout      = "600s"
	packagesTimeout = 20 * time.Minute
)

var pkgMarker = regexp.MustCompile(`^KVMTEST (PASS|FAIL) pkg:(\S+)$`)

// TestPackagesInVM runs those suites in one boot; each is a subtest.
func TestPackagesInVM(t *testing.T) {
	env := harness(t)
	disk := filepath.Join(env.Work, "packages.ext4")
	if err := vm.MakeExt4(disk, "", "packages", 512); err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	body.WriteString("mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk || rc=1\n")
	for _, p := range packagesInVM {
		// Each suite says how long it took in the guest, against its
		// -test.timeout (the margin left on a slower machine).
		fmt.Fprintf(&body, `mkdir -p /mnt/disk/tmp-%[1]s
t0=$(cut -d' ' -f1 /proc/uptime)
if (cd /mnt/disk && TMPDIR=/mnt/disk/tmp-%[1]s MOSSFS_KVM_GUEST=1 /bin/%[1]s.test -test.count=1 -test.timeout %[3]s %[2]s >&3 2>&3); then r=PASS; else r=FAIL; rc=1; fi
echo "%[1]s: $(awk -v t0="$t0" '{ printf "%%.1f", $1 - t0 }' /proc/uptime) s in the guest (-test.timeout %[3]s)" >&3
echo "KVMTEST $r pkg:%[1]s" >&3
rm -rf /mnt/disk/tmp-%[1]s
`, p.pkg, p.flags, pkgTimeout)
	}
	body.WriteString("umount /mnt/disk || rc=1")
	res := boot(t, env, vm.Boot{Name: "packages", Body: body.String(), Disks: []string{disk}, Timeout: packagesTimeout})
	t.Logf("boot: %.1fs wall, QEMU exit %d", res.Duration.Seconds(), res.ExitCode)

	// Each suite's output runs up to its marker.
	var out strings.Builder
	seen := map[string]bool{}
	for _, l := range strings.Split(res.Results, "\n") {
		m := pkgMarker.FindStringSubmatch(l)
		if m == nil {
			if !strings.HasPrefix(l, vm.BeginMarker) && !strings.HasPrefix(l, "uptime ") && !strings.HasPrefix(l, vm.EndMarker) {
				out.WriteString(l + "\n")
			}
			continue
		}
		status, pkg, text := m[1], m[2], out.String()
		out.Reset()
		seen[pkg] = true
		t.Run(pkg, func(t *testing.T) {
			t.Log("\n" + text)
			if status == "FAIL" {
				t.Fail()
			}
		})
	}
	for _, p := range packagesInVM {
		if !seen[p.pkg] {
			t.Errorf("no result for package %s", p.pkg)
		}
	}
	if res.ExitCode != 1 && res.ExitCode != 3 || !strings.Contains(res.Results, vm.EndMarker) {
		t.Errorf("guest did not finish (exit %d)\n%s", res.ExitCode, tail(res.Console, 40))
	}
}
