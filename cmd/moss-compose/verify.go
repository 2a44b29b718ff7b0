package main

import (
	"fmt"
	"os"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/progress"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var verifyFlags struct {
	root         string
	tx           uint64
	noQuarantine bool
	json         bool
	quiet        bool
}

var verifyCmd = &cobra.Command{
	Use:   "verify [--tx N]",
	Short: "Re-hash the store's objects and check the transactions' images",
	Long: `Verify re-hashes every object of the store (or, with --tx N, those the
transaction's image references), moves corrupt ones to the store's
quarantine, and checks that each transaction's image matches its digest and
references only objects that are present. It exits non-zero if anything is
wrong.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runVerify(verifyFlags.root, verifyFlags.tx, verifyFlags.noQuarantine, verifyFlags.json, verifyFlags.quiet)
	},
}

func init() {
	fl := verifyCmd.Flags()
	fl.StringVar(&verifyFlags.root, "root", state.DefaultRoot, "state root")
	fl.Uint64Var(&verifyFlags.tx, "tx", 0, "check only the objects of this transaction")
	fl.BoolVar(&verifyFlags.noQuarantine, "no-quarantine", false, "report corrupt objects, leave them in place")
	fl.BoolVar(&verifyFlags.json, "json", false, "print the report as JSON")
	fl.BoolVarP(&verifyFlags.quiet, "quiet", "q", false, "no progress display")
	rootCmd.AddCommand(verifyCmd)
}

func runVerify(root string, tx uint64, noQuarantine, asJSON, quiet bool) error {
	s, err := state.Open(root)
	if err != nil {
		return err
	}
	prog := progress.New(quiet || asJSON)
	var bar *progress.Bar
	var last int64
	res, err := s.Verify(state.VerifyOptions{Tx: tx, NoQuarantine: noQuarantine, Progress: func(p cas.VerifyProgress) {
		if bar == nil {
			bar = prog.AddBar("verify", p.TotalBytes, true)
		}
		bar.Add(p.Bytes - last)
		last = p.Bytes
	}})
	if bar != nil {
		bar.SetTotal(last, true)
	}
	prog.Wait()
	if err != nil {
		return err
	}
	if asJSON {
		if err := cli.PrintJSON(os.Stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Printf("verified %s: %d object(s), %s, %d transaction(s)\n", res.Scope, res.Objects, humanBytes(uint64(res.Bytes)), res.Transactions)
		for _, b := range res.Corrupt {
			q := ""
			if b.Quarantined != "" {
				q = " (quarantined to " + b.Quarantined + ")"
			}
			fmt.Printf("corrupt object %s: %s%s\n", b.Payload, b.Error, q)
		}
		for _, m := range res.Missing {
			fmt.Printf("missing object %s: transaction %d, %s\n", m.Object, m.Tx, m.Path)
		}
		for _, b := range res.BadImages {
			fmt.Printf("bad image of transaction %d (%s): %s\n", b.Tx, b.Image, b.Reason)
		}
		for _, p := range res.Strays {
			fmt.Printf("stray entry in the objects directory: %s\n", p)
		}
		for _, p := range res.MadePrivate {
			fmt.Printf("was reachable by other users, made private: %s\n", p)
		}
		for _, p := range res.Exposed {
			fmt.Printf("reachable by other users: %s\n", p)
		}
		if ix := res.Index; ix != nil && !ix.Complete() {
			fixed := "not fixed (--no-quarantine)"
			if ix.Rebuilt {
				fixed = "rebuilt"
			}
			fmt.Printf("sha256 index: %d link(s), %d missing, %d wrong, %d stray entries, %d wrong record(s) in %s: %s\n", ix.Links, ix.Missing, ix.Wrong, len(ix.Strays), ix.WrongSHA256Records, state.SHALogFile, fixed)
		}
	}
	if !res.OK() {
		index := ""
		if ix := res.Index; ix != nil && !ix.Rebuilt && !ix.OK() {
			index = ", sha256 index incomplete or wrong"
		}
		return fmt.Errorf("verify: %d corrupt object(s), %d missing object(s), %d bad image(s), %d entries reachable by other users%s", len(res.Corrupt), len(res.Missing), len(res.BadImages), len(res.Exposed), index)
	}
	return nil
}
