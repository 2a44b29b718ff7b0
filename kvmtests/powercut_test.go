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

var (
	composingRe = regexp.MustCompile(`(?m)^POWERCUT-COMPOSING (\d+)$`)
	composedRe  = regexp.MustCompile(`(?m)^POWERCUT-COMPOSED (\d+)$`)
)

// cutter decides when to pull the plug: it times the first compose of the
// boot as the host sees it, then kills QEMU the given fraction of that time
// into the next one, so each trial cuts a different phase of a compose.
type cutter struct {
	frac        float64
	started     []time.Time // host time each COMPOSING marker was first seen
	composed    []time.Time
	killAt      time.Time
	composeTime time.Duration
}

func (c *cutter) watch(results string) bool {
	now := time.Now()
	for len(c.started) < len(composingRe.FindAllString(results, -1)) {
		c.started = append(c.started, now)
	}
	for len(c.composed) < len(composedRe.FindAllString(results, -1)) {
		c.composed = append(c.composed, now)
	}
	if c.killAt.IsZero() && len(c.composed) >= 1 && len(c.started) == 2 {
		c.composeTime = c.composed[0].Sub(c.started[0])
		c.killAt = c.started[1].Add(time.Duration(c.frac * float64(c.composeTime)))
	}
	return !c.killAt.IsZero() && !now.Before(c.killAt)
}

// TestPowerCut kills QEMU in the middle of a compose three times on one
// disk; after each cut the next boot checks that the store opens, verify
// passes, every transaction whose compose had returned is there and every
// listed transaction is complete (4 boots).
func TestPowerCut(t *testing.T) {
	env := harness(t)
	disk := filepath.Join(env.Work, "powercut.ext4")
	if err := vm.MakeExt4(disk, "", "powercut", 256); err != nil {
		t.Fatal(err)
	}
	// The content store's own crash test (cas.TestCrashWriter/TestCrashCheck)
	// rides along on a second disk, so the composes' syncfs cannot make its
	// unsynced batch durable: written in the first boot, checked in the second.
	// (umount of /mnt/cas never runs in a cut boot; the check boot leaves it
	// mounted until power-off.)
	casDisk := filepath.Join(env.Work, "cascrash.ext4")
	if err := vm.MakeExt4(casDisk, "", "cascrash", 128); err != nil {
		t.Fatal(err)
	}
	fracs := []float64{0.15, 0.5, 0.85}
	var durable []string
	for trial := 0; trial <= len(fracs); trial++ {
		body := `mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk || rc=1
export MOSSFS_KVM_GUEST=1 MOSSFS_KVM_DISK=/mnt/disk MOSSFS_KVM_DEV=/dev/vda
`
		if trial <= 1 {
			body += "mkdir -p /mnt/cas && mount -t ext4 /dev/vdb /mnt/cas || rc=1\n"
		}
		if trial == 0 {
			body += `MOSSFS_CAS_CRASH_DIR=/mnt/cas/store /bin/cas.test -test.v -test.run '^TestCrashWriter$' >/tmp/cas.out 2>&1 &
n=0; until grep -q CAS-CRASH-WRITTEN /tmp/cas.out || [ $n -ge 6000 ]; do sleep 0.1; n=$((n+1)); done
cat /tmp/cas.out >&3
`
		}
		if trial == 1 {
			body += `MOSSFS_CAS_CRASH_DIR=/mnt/cas/store /bin/cas.test -test.v -test.run '^TestCrashCheck$' >&3 2>&3 || rc=1
`
		}
		if trial > 0 {
			body += `MOSSFS_KVM_POWERCUT_CHECK=1 /bin/guest.test -test.v -test.run '^TestPowerCutCheck$' >&3 2>&3 || rc=1
`
		}
		if trial < len(fracs) {
			body += `MOSSFS_KVM_POWERCUT=compose /bin/guest.test -test.v -test.run '^TestPowerCutCompose$' >&3 2>&3
echo "KVMTEST FAIL compose-loop-ended" >&3; rc=1
`
		}
		if trial == len(fracs) && len(durable) > 0 {
			// The last boot also boots the newest durable transaction the
			// real way: mossfs boot reads moss.tx from /proc/cmdline.
			last := durable[len(durable)-1]
			b := fmt.Sprintf(`mkdir -p /mnt/disk/pc/usr
if /bin/mossfs boot --sysroot /mnt/disk/pc >&3 2>&3 && [ "$(cat /mnt/disk/pc/usr/.stateID)" = %[1]s ]; then
  echo "KVMTEST PASS boot-from-proc-cmdline" >&3
else
  echo "KVMTEST FAIL boot-from-proc-cmdline (wanted transaction %[1]s)" >&3; rc=1
fi
umount /mnt/disk/pc/usr
`, last)
			body += b
		}
		body += `umount /mnt/disk || rc=1`
		c := &cutter{}
		b := vm.Boot{Name: fmt.Sprintf("powercut-%d", trial), Body: body, Disks: []string{disk, casDisk},
			Files: map[string][]byte{"kvmtest-expect": []byte(strings.Join(durable, "\n") + "\n")}}
		if trial < len(fracs) {
			c.frac = fracs[trial]
			b.Watch = c.watch
		} else if len(durable) > 0 {
			b.Append = "moss.tx=" + durable[len(durable)-1] + " moss.fallback=1"
		}
		res := boot(t, env, b)
		t.Run(fmt.Sprintf("boot%d", trial), func(t *testing.T) {
			t.Logf("boot: %.1fs wall, QEMU exit %d, killed %v", res.Duration.Seconds(), res.ExitCode, res.Killed)
			for _, r := range vm.ParseResults(res.Results) {
				if r.Name == "TestPowerCutCompose" || r.Name == "TestCrashWriter" {
					continue // cut mid-test by design
				}
				t.Run(r.Name, func(t *testing.T) {
					t.Log("\n" + r.Output)
					if r.Status == "FAIL" {
						t.Fail()
					}
				})
			}
			if trial < len(fracs) {
				if trial == 0 && !strings.Contains(res.Results, "CAS-CRASH-WRITTEN") {
					t.Errorf("cas.TestCrashWriter did not report its unsynced batch before the cut")
				}
				if !res.Killed {
					t.Fatalf("the guest was not cut during a compose (exit %d)\n%s\n%s", res.ExitCode, tail(res.Console, 40), res.Results)
				}
				t.Logf("power cut %.0f%% into compose #%d (a compose took %v as seen from the host)",
					c.frac*100, len(c.started), c.composeTime.Round(time.Millisecond))
				for _, m := range composedRe.FindAllStringSubmatch(res.Results, -1) {
					durable = append(durable, m[1])
				}
			} else if !res.Passed() {
				t.Errorf("check boot did not pass (exit %d)\n%s\n%s", res.ExitCode, tail(res.Console, 40), res.Results)
			}
		})
	}
}
