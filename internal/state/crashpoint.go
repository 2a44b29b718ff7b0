package state

import (
	"os"
	"strings"
	"syscall"
)

// CrashPointEnv names the environment variable that makes a process kill
// itself with SIGKILL when it reaches the named crash point, so that tests
// can cut a run exactly in its critical windows. Several names may be given,
// separated by commas; "name@N" fires on the N-th time the point is reached.
const CrashPointEnv = "MOSSFS_CRASHPOINT"

// Crash points, in the order a run reaches them.
const (
	CPImportObjects    = "import-objects-before-sync" // objects written, not yet synced
	CPComposeAlloc     = "compose-after-alloc"        // id taken, nothing else written
	CPComposeInputs    = "compose-after-inputs"       // fragments in <id>.inputs, no image
	CPComposeImage     = "compose-after-image"        // image written, before syncfs
	CPComposeSynced    = "compose-before-publish"     // all durable, metadata not renamed
	CPComposeMetaTemp  = "compose-metadata-temp"      // metadata written under its temporary name
	CPComposePublish   = "compose-after-publish"      // metadata renamed, dir not fsynced
	CPRemoveUnpublish  = "remove-after-unpublish"     // metadata gone, inputs still there
	CPGCImages         = "gc-after-images"            // unreferenced images removed
	CPGCSweep          = "gc-mid-sweep"               // some unreferenced objects removed
	CPVerifyQuarantine = "verify-after-quarantine"    // bad objects moved, report pending
	CPPullStaged       = "pull-partial-staged"        // a partial pull's files fetched into its staging directory
)

var crashPoints = parseCrashPoints(os.Getenv(CrashPointEnv))

type crashPoint struct {
	at   int // fire on this hit (1-based)
	hits int
}

func parseCrashPoints(v string) map[string]*crashPoint {
	if v == "" {
		return nil
	}
	m := map[string]*crashPoint{}
	for _, f := range strings.Split(v, ",") {
		name, nth, _ := strings.Cut(strings.TrimSpace(f), "@")
		at := 1
		if nth != "" {
			n := 0
			for _, c := range nth {
				if c < '0' || c > '9' {
					n = 0
					break
				}
				n = n*10 + int(c-'0')
			}
			if n > 0 {
				at = n
			}
		}
		if name != "" {
			m[name] = &crashPoint{at: at}
		}
	}
	return m
}

// crash kills the process with SIGKILL if the crash point name is armed.
// Only tests arm crash points; otherwise this is one map lookup on nil.
func crash(name string) {
	cp, ok := crashPoints[name]
	if !ok {
		return
	}
	cp.hits++
	if cp.hits == cp.at {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// Crash is crash for callers outside the package (the command's import).
func Crash(name string) { crash(name) }
