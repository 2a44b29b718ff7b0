package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var signFlags struct {
	key  string
	root string
	json bool
}

var signCmd = &cobra.Command{
	Use:   "sign TX...",
	Short: "Sign transactions (their id with their image's fs-verity digest) with an Ed25519 key",
	Long: `Sign each transaction: an Ed25519 signature over the transaction id
together with the fs-verity digest of its image, written to
<root>/transactions/<id>.sig. The image is re-hashed first and must match
the digest that names it. "mossfs boot --pubkey" and "mossfs switch
--pubkey" refuse a transaction whose signature does not verify for the image
they find.`,
	Args: cobra.MinimumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		if signFlags.key == "" {
			return fmt.Errorf("state sign: --key KEYFILE is required (make one with moss-compose keygen)")
		}
		key, err := sign.LoadPrivateKey(signFlags.key)
		if err != nil {
			return fmt.Errorf("state sign: %w", err)
		}
		ids, err := state.ParseIDs(args)
		if err != nil {
			return fmt.Errorf("state sign: %w", err)
		}
		st, err := state.Open(signFlags.root)
		if err != nil {
			return err
		}
		type signed struct {
			ID        uint64 `json:"id"`
			Image     string `json:"image"`
			Signature string `json:"signature"`
		}
		var out []signed
		for _, id := range ids {
			tx, err := st.Get(id)
			if err != nil {
				return fmt.Errorf("state sign: %w", err)
			}
			want, err := tx.ImageDigest()
			if err != nil {
				return fmt.Errorf("state sign: %w", err)
			}
			img := st.ImagePath(tx)
			got, err := fsverity.DigestFile(img)
			if err != nil {
				return fmt.Errorf("state sign: transaction %d: %w", id, err)
			}
			if got != want {
				return fmt.Errorf("state sign: transaction %d: image %s has digest %s, not the %s that names it (corrupt image; not signed)",
					id, img, hex.EncodeToString(got[:]), tx.Image)
			}
			p, err := sign.WriteSignature(st.Root(), key, id, got)
			if err != nil {
				return fmt.Errorf("state sign: %w", err)
			}
			out = append(out, signed{ID: id, Image: "sha256:" + tx.Image, Signature: p})
		}
		if signFlags.json {
			return cli.PrintJSON(os.Stdout, out)
		}
		for _, s := range out {
			fmt.Printf("signed transaction %d (image %s): %s\n", s.ID, s.Image, s.Signature)
		}
		return nil
	},
}

func init() {
	signCmd.Flags().StringVar(&signFlags.key, "key", "", "Ed25519 private key (PEM, from moss-compose keygen)")
	signCmd.Flags().StringVar(&signFlags.root, "root", state.DefaultRoot, "state root")
	signCmd.Flags().BoolVar(&signFlags.json, "json", false, "print what was signed as JSON")
	stateCmd.AddCommand(signCmd)
}
