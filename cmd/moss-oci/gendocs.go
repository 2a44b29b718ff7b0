//go:build gendocs

package main

import "github.com/mossfs/mossfs/internal/clidocs"

// Only in builds with the gendocs tag (make docs): the man page renderer
// stays out of the installed binary.
func init() { rootCmd.AddCommand(clidocs.Command(rootCmd)) }
