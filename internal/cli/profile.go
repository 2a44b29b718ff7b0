package cli

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// Profile starts what the environment asks for, to see where a command
// spends its time as users run it: MOSSFS_CPUPROFILE=FILE writes a CPU
// profile, MOSSFS_MEMPROFILE=FILE a heap profile (all allocations) when the
// command ends (go tool pprof reads both). The returned stop function
// finishes them; it must run before the program exits.
//
// Without MOSSFS_MEMPROFILE it turns the runtime's sampling of allocations
// off: linking runtime/pprof (for these profiles) keeps it on, one sample
// with a stack walk per 512 KiB allocated, ~60 in a build of the 65k-entry
// image, for a profile nobody reads.
func Profile() (stop func()) {
	var stops []func()
	if os.Getenv("MOSSFS_MEMPROFILE") == "" {
		runtime.MemProfileRate = 0
	}
	if p := os.Getenv("MOSSFS_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err != nil {
			fmt.Fprintln(os.Stderr, "MOSSFS_CPUPROFILE:", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "MOSSFS_CPUPROFILE:", err)
			f.Close()
		} else {
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("MOSSFS_MEMPROFILE"); p != "" {
		runtime.MemProfileRate = 4096
		stops = append(stops, func() {
			f, err := os.Create(p)
			if err != nil {
				fmt.Fprintln(os.Stderr, "MOSSFS_MEMPROFILE:", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(os.Stderr, "MOSSFS_MEMPROFILE:", err)
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
