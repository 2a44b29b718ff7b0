package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/spf13/cobra"
)

var keygenJSON bool

var keygenCmd = &cobra.Command{
	Use:   "keygen KEYFILE",
	Short: "Generate an Ed25519 key pair for signing transactions (KEYFILE and KEYFILE.pub)",
	Long: `Generate an Ed25519 key pair: the private key is written to KEYFILE (PEM
PKCS#8, mode 0600, never overwritten), the public key to KEYFILE.pub (PEM).
Sign transactions with "moss-compose state sign TX --key KEYFILE"; give
KEYFILE.pub to "mossfs boot --pubkey" and "mossfs switch --pubkey".`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		pub, err := sign.GenerateKey(args[0])
		if err != nil {
			return err
		}
		if keygenJSON {
			return cli.PrintJSON(os.Stdout, map[string]string{
				"private_key": args[0], "public_key": args[0] + ".pub", "public_key_hex": hex.EncodeToString(pub)})
		}
		fmt.Printf("private key %s\npublic key  %s\n", args[0], args[0]+".pub")
		return nil
	},
}

func init() {
	keygenCmd.Flags().BoolVar(&keygenJSON, "json", false, "print the key file names as JSON")
	rootCmd.AddCommand(keygenCmd)
}
