package main

import "github.com/spf13/cobra"

// adopt: moss's databases are SQLite, read by modernc.org/sqlite, whose
// package initialisation (a C library translated to Go: libc's tables and
// allocator) cost every start of moss-compose ~2 ms and 4 MB of binary, for
// one subcommand. It lives in moss-oci, the program that links the large
// libraries; "moss-compose adopt ARGS" runs "moss-oci adopt ARGS" in its
// place.
var adoptCmd = &cobra.Command{
	Use:                "adopt --moss-root DIR (--state N | --all | --newest) [--follow]",
	Short:              "Build transactions from the states of a moss installation (its databases and assets; runs moss-oci adopt)",
	DisableFlagParsing: true,
	RunE: func(cmd *cobra.Command, args []string) error {
		return execMossOCI("adopt", args)
	},
}

func init() { rootCmd.AddCommand(adoptCmd) }
