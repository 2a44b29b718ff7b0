package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/hugeheap"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var composeFlags struct {
	root    string
	from    uint64
	stones  []string
	trees   []string
	dumps   []string
	objects string
	xattrs  []string
	remove  []string
	id      uint64
	json    bool
	quiet   bool
	force   bool

	skipTriggers, rerunTriggers bool
	triggerTimeout              time.Duration
}

var composeCmd = &cobra.Command{
	Use:   "compose [--from TX] [--stone FILE]... [--tree DIR[:PREFIX]]... [--dump FILE[:PREFIX]]... [--remove PKG]...",
	Short: "Build a new transaction (an EROFS image of /usr) and print its id",
	Long: `Compose builds a new transaction from the inputs of --from (if given), minus
the inputs named by --remove, plus the given packages and trees, and prints
its id. A package with the name of a base input replaces it (an upgrade); a
tree replaces a base tree with the same directory and prefix. The image is a
/usr tree: stones' paths sit at its root, and --tree DIR:PREFIX places DIR at
PREFIX (default: the root), as --dump FILE:PREFIX does a composefs dump's
tree (contents from the store or the digest store given with --objects).
Conflicts (one path, two inputs, different
content; or a package's Conflicts record) stop the compose before any
transaction, image or metadata is written.

A compose that changes nothing (no input removed, every new input the same
as the one of --from it replaces) creates nothing: it says so and prints the
id of --from (JSON: "unchanged": true); --force creates a new transaction
anyway.

Transaction triggers: the trigger files of the new tree
(/usr/share/moss/triggers/tx.d/*.yaml, moss's format) are matched against
every path of the tree as moss does, and their handlers run, each in a fresh
container (new mount, pid, ipc, uts and net namespaces; as root; no network)
whose /usr is the new transaction, writable; /etc is the host's, read-only;
/proc is new; /tmp, /var and /run are empty tmpfs; the environment is only
PATH, LANG=C.UTF-8 and SOURCE_DATE_EPOCH (the transaction's time). What they
write is folded into the image (mtimes set to the transaction's time) and
recorded per trigger (state show, state diff). A trigger whose inputs are
unchanged since --from is not run again: its outputs are carried over. A
handler exiting non-zero is a warning; one that cannot start or times out
fails the compose, and nothing is published. The transaction's time is
$SOURCE_DATE_EPOCH when set, else now.`,
	Args: cobra.NoArgs,
	RunE: runCompose,
}

func init() {
	fl := composeCmd.Flags()
	fl.StringVar(&composeFlags.root, "root", state.DefaultRoot, "state root")
	fl.Uint64Var(&composeFlags.from, "from", 0, "start from this transaction's inputs")
	fl.StringArrayVar(&composeFlags.stones, "stone", nil, "add a .stone package (repeatable)")
	fl.StringArrayVar(&composeFlags.trees, "tree", nil, "add a directory, DIR[:PREFIX] (repeatable)")
	fl.StringArrayVar(&composeFlags.dumps, "dump", nil, "add a composefs dump's tree, FILE[:PREFIX] (repeatable)")
	fl.StringVar(&composeFlags.objects, "objects", "", "digest store holding the contents of the dumps' files")
	fl.StringSliceVar(&composeFlags.xattrs, "xattrs", nil, "keep only these xattr namespaces of directories (user,security,trusted,system)")
	fl.StringArrayVar(&composeFlags.remove, "remove", nil, "leave out this input of --from: a package name or tree directory (repeatable)")
	fl.Uint64Var(&composeFlags.id, "id", 0, "the new transaction's id (needed in a state root that follows moss, whose ids are moss's state ids)")
	fl.BoolVar(&composeFlags.skipTriggers, "skip-triggers", false, "run no transaction trigger (needed to compose as a user who is not root)")
	fl.BoolVar(&composeFlags.rerunTriggers, "rerun-triggers", false, "run every hit transaction trigger, even those whose inputs are unchanged since --from")
	fl.DurationVar(&composeFlags.triggerTimeout, "trigger-timeout", state.DefaultTriggerTimeout, "time limit of one trigger handler")
	fl.BoolVar(&composeFlags.json, "json", false, "print the new transaction as JSON")
	fl.BoolVarP(&composeFlags.quiet, "quiet", "q", false, "no progress display")
	fl.BoolVar(&composeFlags.force, "force", false, "create a transaction even when it would hold what --from holds")
	rootCmd.AddCommand(composeCmd)
}

type composeOutput struct {
	*state.ComposeResult
	Added []importedInput `json:"added"`
	Image string          `json:"image_path"`
}

// conflictError wraps a compose error; with --json, conflicts are also
// printed as {"conflicts": [...], "more": N} on stdout.
func conflictError(err error) error {
	var ce *state.ConflictError
	if errors.As(err, &ce) && composeFlags.json {
		cli.PrintJSON(os.Stdout, map[string]any{"conflicts": ce.Conflicts, "more": ce.More})
	}
	return fmt.Errorf("compose: %w", err)
}

// sourceDateEpoch returns the time $SOURCE_DATE_EPOCH names (zero if unset).
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, fmt.Errorf("compose: SOURCE_DATE_EPOCH=%q is not a positive number of seconds", v)
	}
	return time.Unix(sec, 0), nil
}

// composeGC sets the garbage collector for a compose, a short-lived
// process whose heap is mostly its trees, live until the image is written:
// collecting while they are built finds little garbage, and a collection
// that scans a fresh slab before it is written maps the zero page into it,
// so that each first write then costs a copy-on-write fault and a TLB
// shootdown. Unless GOGC or GOMEMLIMIT say otherwise, the collector runs
// only when the heap nears a quarter of the machine's memory. It reports
// whether it turned the collector off.
func composeGC() bool {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return false
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil || si.Totalram == 0 {
		return false
	}
	debug.SetMemoryLimit(int64(min(uint64(si.Totalram)*uint64(max(si.Unit, 1))/4, 1<<62)))
	debug.SetGCPercent(-1)
	return true
}

// composeHeapPerEntry is about what a compose's heap holds per entry of
// its base (the base's tree and the new one, their layout): 30 MB for the
// 65k-entry base of the benchmark, ~480 bytes an entry; twice that is asked
// of hugeheap.Grow (memory it does not touch costs nothing).
const composeHeapPerEntry = 1024

// composeHugeHeap makes the heap of a compose on a large base ready in
// huge pages (see hugeheap): for the benchmark's 65k-entry base, ~8,900
// page faults of 4 KiB were over a third of the command's CPU time. Bases
// of fewer than ~8k entries gain nothing (the collection Grow runs, and
// zeroing whole huge pages, cost more than their faults), nor does a
// compose with the collector on.
func composeHugeHeap(gcOff bool, base *state.Transaction) {
	if gcOff && base != nil {
		hugeheap.Grow(int(min(base.Counts.Entries, 1<<22)) * composeHeapPerEntry)
	}
}

func runCompose(cmd *cobra.Command, args []string) error {
	gcOff := composeGC()
	// Refused before anything is imported.
	if os.Geteuid() != 0 && !composeFlags.skipTriggers {
		return errors.New("compose: transaction triggers run in containers as root: compose as root, or pass --skip-triggers")
	}
	if len(composeFlags.remove) > 0 && composeFlags.from == 0 {
		return errors.New("compose: --remove needs --from")
	}
	s, err := state.Create(composeFlags.root)
	if err != nil {
		return err
	}
	// Refused before anything is imported (Compose checks it again).
	if mossRoot, err := s.FollowsMoss(); err != nil {
		return err
	} else if mossRoot != "" && composeFlags.id == 0 {
		return fmt.Errorf("compose: %s follows the moss installation %s, whose state ids are its transaction ids: give the new transaction an id (--id)", composeFlags.root, mossRoot)
	}
	// Held from the first object written until the transaction is published.
	lk, err := s.Lock()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	var base *state.Transaction
	if composeFlags.from != 0 {
		if base, err = s.Get(composeFlags.from); err != nil {
			return fmt.Errorf("compose --from: %w", err)
		}
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		return err
	}
	defer im.Close()
	// Conflicts that can be told from the packages' metadata and layouts,
	// and from the trees (hashed, not stored), are found before any content
	// is stored. A lone tree on an empty base cannot conflict.
	im.XattrNamespaces = composeFlags.xattrs
	add := state.NewInputs{Stones: composeFlags.stones, Trees: composeFlags.trees, Dumps: composeFlags.dumps}
	n := len(add.Stones) + len(add.Trees) + len(add.Dumps)
	// A compose of the base alone is most likely "no change", which reads
	// no trees: no heap to prepare for.
	if n > 0 || len(composeFlags.remove) > 0 || composeFlags.force || composeFlags.rerunTriggers {
		composeHugeHeap(gcOff, base)
	}
	if len(add.Stones) > 0 || n > 1 || (n == 1 && composeFlags.from != 0) {
		if err := im.PreCheck(cmdContext(cmd), composeFlags.from, composeFlags.remove, add); err != nil {
			return conflictError(err)
		}
		// The pre-check's trees (the base's among them) are garbage now,
		// and little else is live: one collection here lets the compose's
		// own trees reuse their memory instead of faulting in fresh pages.
		runtime.GC()
	}
	frags, err := importAll(cmdContext(cmd), im, add, composeFlags.objects, composeFlags.quiet || composeFlags.json)
	if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	added := describeInputs(frags)
	when, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	res, err := s.Compose(state.ComposeOptions{From: composeFlags.from, Remove: composeFlags.remove, Add: frags, Force: composeFlags.force, ID: composeFlags.id, Time: when,
		Triggers: state.TriggerOptions{Skip: composeFlags.skipTriggers, Rerun: composeFlags.rerunTriggers, Timeout: composeFlags.triggerTimeout}})
	if err != nil {
		return conflictError(err)
	}
	if res.Unchanged && !composeFlags.json {
		fmt.Println(res.Tx.ID)
		fmt.Fprintf(os.Stderr, "no change: the result would be transaction %d; nothing created (--force creates it anyway)\n", res.Tx.ID)
		return nil
	}
	if composeFlags.json {
		return cli.PrintJSON(os.Stdout, composeOutput{ComposeResult: res, Added: added, Image: s.ImagePath(res.Tx)})
	}
	fmt.Println(res.Tx.ID)
	if !composeFlags.quiet {
		for _, in := range res.Replaced {
			fmt.Fprintf(os.Stderr, "replaced %s\n", in.Label())
		}
		for _, in := range res.Removed {
			fmt.Fprintf(os.Stderr, "removed %s\n", in.Label())
		}
		c := res.Tx.Counts
		fmt.Fprintf(os.Stderr, "transaction %d: %d entries (%d files, %d objects, %s), image sha256:%s (%s)\n",
			res.Tx.ID, c.Entries, c.Files, c.Objects, humanBytes(c.Bytes), res.Tx.Image, humanBytes(uint64(c.Image)))
	}
	return nil
}
