// Package procbench times the mossfs binaries as users run them: each
// benchmark builds moss-compose and mossfs as `make build` does and runs them
// as processes (process wall time, start-up, GC and syncs included), paired
// with a baseline run in the same benchmark, interleaved, and reports medians
// and the ratio of each pair. The package has no code of its own: see
// bench_test.go for the table of rows and their baselines.
package procbench
