package main

import (
	"fmt"
	"os"

	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var blsFlags struct {
	root    string
	linux   string
	initrd  []string
	options string
	title   string
	keep    int
	json    bool
}

var blsCmd = &cobra.Command{
	Use:   "bls ENTRIES_DIR",
	Short: "Write Boot Loader Specification entries for the newest transactions",
	Long: `Write a Boot Loader Specification entry (ENTRIES_DIR/mossfs-<id>.conf,
usually $BOOT/loader/entries) for each of the newest --keep transactions,
with moss.tx=<id>, the image digest (moss.digest=) and the older listed
transactions as moss.fallback= on its command line, and remove the mossfs
entries of transactions that are gone or no longer among the newest (the
current default entry is kept while its transaction exists). The default
entry is the "default" line of loader.conf beside ENTRIES_DIR; mossfs switch
and rollback move it.

The kernel, initrds and other options default to those of the newest mossfs
entry; with none, --linux is required and the options default to the
running kernel's command line without its mossfs parameters.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		dir := args[0]
		cfg, ok := bls.Template(dir)
		if !ok {
			cfg = bls.Config{}
			if data, err := os.ReadFile("/proc/cmdline"); err == nil {
				cfg.Options = bls.StripOptions(string(data))
			}
		}
		if cmd.Flags().Changed("linux") {
			cfg.Linux = blsFlags.linux
		}
		if cmd.Flags().Changed("initrd") {
			cfg.Initrd = blsFlags.initrd
		}
		if cmd.Flags().Changed("options") {
			cfg.Options = bls.StripOptions(blsFlags.options)
		}
		cfg.Title, cfg.Keep = blsFlags.title, blsFlags.keep
		st, err := state.Open(blsFlags.root)
		if err != nil {
			return fmt.Errorf("bls: %w", err)
		}
		list, err := st.List()
		if err != nil {
			return fmt.Errorf("bls: %w", err)
		}
		txs := make([]bls.Transaction, len(list))
		for i, tx := range list {
			txs[i] = bls.Transaction{ID: tx.ID, Image: tx.Image}
		}
		res, err := bls.Sync(dir, txs, cfg)
		if err != nil {
			return err
		}
		if blsFlags.json {
			return cli.PrintJSON(cmd.OutOrStdout(), res)
		}
		for _, n := range res.Written {
			fmt.Fprintln(cmd.OutOrStdout(), "wrote  ", n)
		}
		for _, n := range res.Kept {
			fmt.Fprintln(cmd.OutOrStdout(), "kept   ", n, "(default)")
		}
		for _, n := range res.Removed {
			fmt.Fprintln(cmd.OutOrStdout(), "removed", n)
		}
		return nil
	},
}

func init() {
	f := blsCmd.Flags()
	f.StringVar(&blsFlags.root, "root", state.DefaultRoot, "state root")
	f.StringVar(&blsFlags.linux, "linux", "", "kernel path on the boot partition (e.g. /vmlinuz-6.12)")
	f.StringArrayVar(&blsFlags.initrd, "initrd", nil, "initrd path on the boot partition (repeatable)")
	f.StringVar(&blsFlags.options, "options", "", "kernel options besides the mossfs ones")
	f.StringVar(&blsFlags.title, "title", "mossfs", "entry title prefix")
	f.IntVar(&blsFlags.keep, "keep", bls.DefaultKeep, "number of newest transactions that get an entry")
	f.BoolVar(&blsFlags.json, "json", false, "print what changed as JSON")
	rootCmd.AddCommand(blsCmd)
}
