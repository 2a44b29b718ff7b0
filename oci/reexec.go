package oci

import "go.podman.io/storage/pkg/reexec"

// ReexecInit must be called first thing in main by a program that writes
// to containers-storage: containers/storage re-executes the program to
// apply layers, and in that child ReexecInit runs the work and returns
// true (main must then return). Without it applying a layer panics.
func ReexecInit() bool { return reexec.Init() }
