package main

import "github.com/spf13/cobra"

// export: like image, it links containers/image, so "moss-compose export
// ARGS" runs "moss-oci export ARGS" in its place.
var exportCmd = &cobra.Command{
	Use:                "export TX DEST [flags]",
	Short:              "Export a transaction as an OCI image (no /etc) to oci:, oci-archive:, docker-archive:, docker:// or containers-storage: (runs moss-oci export)",
	DisableFlagParsing: true,
	RunE: func(cmd *cobra.Command, args []string) error {
		return execMossOCI("export", args)
	},
}

func init() { rootCmd.AddCommand(exportCmd) }
