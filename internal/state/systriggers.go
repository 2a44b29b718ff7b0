package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mossfs/mossfs/cas"
)

// SysTriggerRun records one run of a transaction's system triggers
// (usr/share/moss/triggers/sys.d) on the live system: after mossfs switch
// or rollback, or at boot by mossfs-triggers.service when the booted
// transaction is not the one they last ran for.
type SysTriggerRun struct {
	Tx       uint64    `json:"tx"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Usr is the /usr the triggers were loaded from and matched against.
	Usr string `json:"usr"`
	// Triggers in the order they ran.
	Triggers []SysTriggerResult `json:"triggers"`
	// Skipped are trigger files that did not parse (moss skips them silently).
	Skipped []string `json:"skipped_files,omitempty"`
}

// SysTriggerResult is one trigger of a run.
type SysTriggerResult struct {
	Name     string              `json:"name"`
	Commands []SysTriggerCommand `json:"commands"`
}

// SysTriggerCommand is one handler command of a trigger and how it ended.
type SysTriggerCommand struct {
	Command string `json:"command"`
	// Exit is the exit status; -1 when it did not start, was killed or timed out.
	Exit     int    `json:"exit"`
	Error    string `json:"error,omitempty"`
	Duration string `json:"duration"`
	// Output is the end of what it printed, kept when it failed.
	Output string `json:"output,omitempty"`
}

// Failed counts the commands of the run that did not exit 0.
func (r *SysTriggerRun) Failed() int {
	n := 0
	for _, t := range r.Triggers {
		for _, c := range t.Commands {
			if c.Exit != 0 {
				n++
			}
		}
	}
	return n
}

// sysTriggersDir holds the record; private like the rest of the state root.
func (s *State) sysTriggersDir() string { return filepath.Dir(s.SysTriggersPath()) }

// SysTriggersPath is the file holding the last run's record.
func (s *State) SysTriggersPath() string {
	return filepath.Join(s.root, "system-triggers", "last.json")
}

// LastSysTriggers returns the record of the last system trigger run, nil
// if there was none.
func (s *State) LastSysTriggers() (*SysTriggerRun, error) { return ReadSysTriggers(s.root) }

// ReadSysTriggers is LastSysTriggers for the state root root without
// opening it (mossfs status reads it as it reads mount records).
func ReadSysTriggers(root string) (*SysTriggerRun, error) {
	path := filepath.Join(root, "system-triggers", "last.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("system trigger record: %w", err)
	}
	var r SysTriggerRun
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("system trigger record %s: %w", path, err)
	}
	return &r, nil
}

// WriteSysTriggers replaces the record with r (atomically and durably: it
// decides whether the boot-time unit runs the triggers again).
func (s *State) WriteSysTriggers(r *SysTriggerRun) error {
	if _, err := MkdirPrivate(s.root, "system-triggers"); err != nil {
		return fmt.Errorf("system trigger record: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("system trigger record: %w", err)
	}
	return writeFileAtomic(s.SysTriggersPath(), append(data, '\n'), PrivateFileMode, true)
}

// LockSysTriggers serializes system trigger runs (a switch and the boot
// unit, or two switches): the caller holds it while it runs them and
// writes the record.
func (s *State) LockSysTriggers() (*cas.FileLock, error) {
	if _, err := MkdirPrivate(s.root, "system-triggers"); err != nil {
		return nil, fmt.Errorf("system trigger lock: %w", err)
	}
	return cas.Lock(filepath.Join(s.sysTriggersDir(), ".lock"))
}
