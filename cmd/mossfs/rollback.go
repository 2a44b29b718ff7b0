package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

var rollbackFlags struct {
	root, target, pubkey, driver, verity string
	blsDirs                              []string
	skipTriggers                         bool
}

var rollbackCmd = &cobra.Command{
	Use:   "rollback [flags]",
	Short: "Switch back to the previous transaction",
	Long: `Switch TARGET (default /usr) back to the previous transaction: the parent
recorded in the active transaction's metadata, or else the transaction that
was active before the last switch. As with switch, the system triggers of
that transaction run afterwards unless --skip-triggers is given.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		f := rollbackFlags
		prev, err := rollbackTarget(f.root)
		if err != nil {
			return err
		}
		return switchTo(cmd, f.root, prev, f.target, f.pubkey, f.driver, f.verity, f.blsDirs, f.skipTriggers)
	},
}

func init() {
	fl := rollbackCmd.Flags()
	fl.StringVar(&rollbackFlags.root, "root", defaultRoot, "state root")
	fl.StringVar(&rollbackFlags.target, "target", "/usr", "mount point to switch")
	fl.StringVar(&rollbackFlags.pubkey, "pubkey", "", "require a valid signature by this Ed25519 public key (PEM)")
	fl.StringVar(&rollbackFlags.driver, "driver", "auto", "auto, overlay or fuse")
	fl.StringVar(&rollbackFlags.verity, "verity", "auto", "require, on, off or auto")
	fl.StringSliceVar(&rollbackFlags.blsDirs, "bls-dir", nil, "BLS entries directory whose default entry becomes the transaction (default: the standard ones under / that hold mossfs entries)")
	fl.BoolVar(&rollbackFlags.skipTriggers, "skip-triggers", false, "do not run the system triggers of the transaction")
	addFUSEPassthroughFlag(rollbackCmd)
	rootCmd.AddCommand(rollbackCmd)
}

// rollbackTarget returns the transaction rollback goes to.
func rollbackTarget(root string) (uint64, error) {
	active, err := readActive(root)
	if err != nil {
		return 0, fmt.Errorf("rollback: %w", err)
	}
	if active == 0 {
		return 0, fmt.Errorf("rollback: no active transaction recorded in %s", root)
	}
	tx, err := readTx(root, active)
	if err != nil {
		return 0, fmt.Errorf("rollback: active %w", err)
	}
	if tx.Parent != 0 {
		if _, err := readTx(root, tx.Parent); err == nil {
			return tx.Parent, nil
		}
	}
	prev, err := readID(previousActivePath(root))
	if err != nil {
		return 0, fmt.Errorf("rollback: %w", err)
	}
	if prev == 0 || prev == active {
		return 0, fmt.Errorf("rollback: transaction %d records no parent and nothing was active before it", active)
	}
	if _, err := readTx(root, prev); err != nil {
		return 0, fmt.Errorf("rollback: previously active %w", err)
	}
	return prev, nil
}
