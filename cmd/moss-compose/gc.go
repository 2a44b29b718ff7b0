package main

import (
	"fmt"
	"os"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/progress"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/spf13/cobra"
)

var gcFlags struct {
	root   string
	dryRun bool
	wait   bool
	json   bool
	quiet  bool
}

var gcCmd = &cobra.Command{
	Use:   "gc",
	Short: "Remove objects, images and fragments no retained transaction needs",
	Long: `Gc marks every object referenced by the image of a retained transaction, a
pinned transaction or image (<root>/pins/), the active and every mounted
transaction (reading the images with the erofs reader), then removes the
rest: unreferenced objects and images, fragments of removed transactions,
and temporary files of interrupted runs. It takes the store's exclusive lock
and fails at once if an import or compose is running (--wait to wait).`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		s, err := state.Open(gcFlags.root)
		if err != nil {
			return err
		}
		res, err := runGC(s, gcFlags.dryRun, gcFlags.wait, gcFlags.quiet || gcFlags.json)
		if err != nil {
			return err
		}
		if gcFlags.json {
			return cli.PrintJSON(os.Stdout, res)
		}
		printGC(res)
		return nil
	},
}

func init() {
	fl := gcCmd.Flags()
	fl.StringVar(&gcFlags.root, "root", state.DefaultRoot, "state root")
	fl.BoolVarP(&gcFlags.dryRun, "dry-run", "n", false, "report what would be removed, remove nothing")
	fl.BoolVar(&gcFlags.wait, "wait", false, "wait for running imports and composes instead of failing")
	fl.BoolVar(&gcFlags.json, "json", false, "print the result as JSON")
	fl.BoolVarP(&gcFlags.quiet, "quiet", "q", false, "no progress display")
	rootCmd.AddCommand(gcCmd)
}

func runGC(s *state.State, dryRun, wait, quiet bool) (*state.GCResult, error) {
	prog := progress.New(quiet)
	var bar *progress.Bar
	var last int
	res, err := s.GC(state.GCOptions{DryRun: dryRun, Wait: wait, Progress: func(done, total int) {
		if bar == nil {
			bar = prog.AddBar("sweep", int64(total), false)
		}
		bar.Add(int64(done - last))
		last = done
	}})
	if bar != nil {
		bar.SetTotal(int64(last), true)
	}
	prog.Wait()
	return res, err
}

func printGC(r *state.GCResult) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Printf("kept %d transaction(s), %d image(s), %d of %d objects\n", len(r.Transactions), len(r.Images), r.ObjectsLive, r.Objects)
	fmt.Printf("%s %d object(s) (%s), %d image(s), %d fragment dir(s), %d temporary file(s)\n",
		verb, r.ObjectsRemoved, humanBytes(uint64(r.BytesRemoved)), len(r.ImagesRemoved), len(r.InputsRemoved), r.TempRemoved)
}
