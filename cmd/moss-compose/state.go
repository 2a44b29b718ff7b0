package main

import "github.com/spf13/cobra"

// stateCmd groups the transaction-state subcommands (list, show, diff,
// remove, prune, verify, sign); each adds itself from its own file.
var stateCmd = &cobra.Command{
	Use:   "state",
	Short: "List, inspect, compare, remove and sign transactions",
}

func init() { rootCmd.AddCommand(stateCmd) }
