package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Machine describes one QEMU boot. The kernel always gets no_timer_check:
// under TCG on a busy host the IO-APIC timer check can fail spuriously and
// panic the guest ("IO-APIC + timer doesn't work!").
type Machine struct {
	Kernel  *Kernel
	Initrd  string
	Disks   []string // raw images attached as virtio disks vda, vdb, …
	Append  string   // extra kernel command line
	MemMB   int
	Timeout time.Duration
	Dir     string // console.log and results.log are written here
	// KVM uses -enable-kvm instead of TCG (MOSSFS_KVM=1).
	KVM bool
	// Watch, if set, is called with the results written so far every 50 ms
	// while the guest runs; returning true kills QEMU at once (a power cut).
	Watch func(results string) bool
}

// Result is what a boot produced.
type Result struct {
	ExitCode int  // QEMU's exit status: 1 guest reported pass, 3 fail, 0 no report
	Killed   bool // Watch asked for a power cut
	Retried  bool // the first attempt died before /init and was repeated
	TimedOut bool
	Duration time.Duration
	Console  string // ttyS0: kernel messages and anything else on the console
	Results  string // ttyS1: what the guest's tests wrote, \r stripped
}

// DefaultTimeout is how long a boot may take unless it says otherwise.
// Under TCG everything in the guest runs several times slower than on the
// host, and several times slower again when the host is busy: with the
// host at load 9-11 the longest default boot (the first power-cut boot)
// took 90 s. The timeout only catches a guest that hangs.
const DefaultTimeout = 15 * time.Minute

// QEMUPath returns the qemu-system-x86_64 binary or an error saying it is missing.
func QEMUPath() (string, error) { return exec.LookPath("qemu-system-x86_64") }

// Run boots the machine and waits for QEMU to exit (or the timeout/power cut).
func (m *Machine) Run(ctx context.Context) (*Result, error) {
	qemu, err := QEMUPath()
	if err != nil {
		return nil, err
	}
	if m.Timeout == 0 {
		m.Timeout = DefaultTimeout
	}
	if m.MemMB == 0 {
		m.MemMB = 1024
	}
	console := filepath.Join(m.Dir, "console.log")
	results := filepath.Join(m.Dir, "results.log")
	os.Remove(console)
	os.Remove(results)
	args := []string{"-cpu", "max", "-m", strconv.Itoa(m.MemMB), "-smp", "1",
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
		"-serial", "file:" + console, "-serial", "file:" + results,
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-kernel", m.Kernel.Vmlinuz, "-initrd", m.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 loglevel=4 no_timer_check " + m.Append)}
	if m.KVM {
		args = append([]string{"-enable-kvm"}, args...)
	} else {
		args = append([]string{"-accel", "tcg"}, args...)
	}
	for _, d := range m.Disks {
		args = append(args, "-drive", "file="+d+",if=virtio,format=raw,cache=unsafe")
	}
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	cmd := exec.Command(qemu, args...)
	out, _ := os.Create(filepath.Join(m.Dir, "qemu.log"))
	if out != nil {
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", qemu, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	res := &Result{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var werr error
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-ctx.Done():
			res.TimedOut = true
			cmd.Process.Signal(syscall.SIGKILL)
			werr = <-done
			break wait
		case <-tick.C:
			if m.Watch != nil {
				data, _ := os.ReadFile(results)
				if m.Watch(strings.ReplaceAll(string(data), "\r", "")) {
					res.Killed = true
					cmd.Process.Signal(syscall.SIGKILL)
					werr = <-done
					break wait
				}
			}
		}
	}
	res.Duration = time.Since(start)
	var ee *exec.ExitError
	switch {
	case werr == nil:
		res.ExitCode = 0
	case errors.As(werr, &ee):
		res.ExitCode = ee.ExitCode()
	default:
		return nil, werr
	}
	c, _ := os.ReadFile(console)
	r, _ := os.ReadFile(results)
	res.Console = strings.ReplaceAll(string(c), "\r", "")
	res.Results = strings.ReplaceAll(string(r), "\r", "")
	if !res.Killed && !res.TimedOut && res.ExitCode != 1 && res.ExitCode != 3 {
		q, _ := os.ReadFile(filepath.Join(m.Dir, "qemu.log"))
		if len(q) > 0 {
			res.Console += "\n--- qemu stderr ---\n" + string(q)
		}
	}
	return res, nil
}

// Passed reports whether the guest reported success and its report is complete.
func (r *Result) Passed() bool {
	return r.ExitCode == 1 && strings.Contains(r.Results, EndMarker) && !strings.Contains(r.Results, "\nKVMTEST FAIL")
}

// Markers the guest writes to its results port.
const (
	BeginMarker = "KVMTEST-BEGIN"
	EndMarker   = "KVMTEST-END"
)

// TestResult is one test the guest reported: a `go test -v` result line
// (--- PASS/FAIL/SKIP: Name) or a `KVMTEST PASS|FAIL|SKIP name` marker, with
// the output lines that belong to it.
type TestResult struct {
	Name   string
	Status string // PASS, FAIL, SKIP
	Output string
}

var (
	goRun    = regexp.MustCompile(`^=== (RUN|CONT|PAUSE|NAME)\s+(\S+)`)
	goResult = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	marker   = regexp.MustCompile(`^KVMTEST (PASS|FAIL|SKIP) (\S+)`)
)

// ParseResults extracts top-level test results from the results log in the
// order they finished. Output lines are attributed to the top-level test
// that was last started; marker tests get the lines since the previous result.
func ParseResults(log string) []TestResult {
	var out []TestResult
	var cur string
	pending := map[string]*strings.Builder{}
	var loose strings.Builder
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := goRun.FindStringSubmatch(line); m != nil {
			cur = strings.SplitN(m[2], "/", 2)[0]
			if pending[cur] == nil {
				pending[cur] = &strings.Builder{}
			}
			continue
		}
		if m := goResult.FindStringSubmatch(line); m != nil {
			top := strings.SplitN(m[2], "/", 2)[0]
			if n := len(out); top != m[2] && pending[top] == nil && n > 0 && out[n-1].Name == top {
				// go test -v prints subtest results after their parent's.
				out[n-1].Output += line + "\n"
				continue
			}
			b := pending[top]
			if b == nil {
				b = &strings.Builder{}
				pending[top] = b
			}
			b.WriteString(line + "\n")
			if top == m[2] {
				out = append(out, TestResult{Name: top, Status: m[1], Output: b.String()})
				delete(pending, top)
				loose.Reset()
				cur = ""
			}
			continue
		}
		if m := marker.FindStringSubmatch(line); m != nil {
			out = append(out, TestResult{Name: m[2], Status: m[1], Output: loose.String() + line + "\n"})
			loose.Reset()
			continue
		}
		if b := pending[cur]; cur != "" && b != nil {
			b.WriteString(line + "\n")
		} else {
			loose.WriteString(line + "\n")
		}
	}
	// Tests that started but never finished (a crash or a power cut).
	for name, b := range pending {
		out = append(out, TestResult{Name: name, Status: "FAIL", Output: b.String() + "(no result line: the guest stopped mid-test)\n"})
	}
	return out
}
