package main

import (
	"context"
	"fmt"
	"github.com/mossfs/mossfs/internal/ocipull"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/progress"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci"
	"github.com/mossfs/mossfs/oci/layer"
	"github.com/spf13/cobra"
)

var imageFlags struct {
	root          string
	json          bool
	quiet         bool
	noVerifySeal  bool
	name          string
	platform      string
	authfile      string
	creds         string
	tlsVerify     bool
	policy        string
	maxLayerBytes int64
	maxRatio      int64
	maxEntries    int
	partial       bool
	unverified    bool
}

var imageCmd = &cobra.Command{
	Use:   "image",
	Short: "Container images in the store: pull, list, inspect, remove",
}

var imagePullCmd = &cobra.Command{
	Use:   "pull REF",
	Short: "Pull an image (docker://, oci:, oci-archive:, docker-archive:, containers-storage:, dir:) into the store",
	Long: `Pull reads an image by a containers-transport reference, as podman and
skopeo spell it, applies its layers in order into one tree (whiteouts and
opaque directories take effect, hardlinks, xattrs and devices are kept),
stores the contents in the store's content store and records the image
apart from the OS transactions. registries.conf, auth.json and policy.json
apply as in podman. A multi-arch index gives the host's platform unless
--platform says otherwise. Pulling an image the store holds does nothing.

A refused pull (a layer that does not match its digest or diff_id, a
hostile path, a stream past the caps) leaves the store as it was.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error { return runPull(cmd, args[0]) },
}

var imageListCmd = &cobra.Command{
	Use:   "list",
	Short: "List the container images in the store",
	Args:  cobra.NoArgs,
	RunE:  func(cmd *cobra.Command, args []string) error { return runList() },
}

var imageInspectCmd = &cobra.Command{
	Use:   "inspect NAME|ID",
	Short: "Show an image's record (JSON)",
	Args:  cobra.ExactArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runInspect(args[0]) },
}

var imageRemoveCmd = &cobra.Command{
	Use:   "remove NAME|ID...",
	Short: "Remove images' records (gc then frees what nothing else uses)",
	Args:  cobra.MinimumNArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runRemove(args) },
}

func init() {
	for _, c := range []*cobra.Command{imagePullCmd, imageListCmd, imageInspectCmd, imageRemoveCmd} {
		c.Flags().StringVar(&imageFlags.root, "root", state.DefaultRoot, "state root")
		c.Flags().BoolVar(&imageFlags.json, "json", false, "print JSON")
		imageCmd.AddCommand(c)
	}
	fl := imagePullCmd.Flags()
	fl.StringVar(&imageFlags.name, "name", "", "name to record (default: the reference without its transport)")
	fl.StringVar(&imageFlags.platform, "platform", "", "OS/ARCH[/VARIANT] to pick from a multi-arch index (default: this host's)")
	fl.StringVar(&imageFlags.authfile, "authfile", "", "auth.json with registry credentials (default: podman's)")
	fl.StringVar(&imageFlags.creds, "creds", "", "USER:PASSWORD for the registry")
	fl.BoolVar(&imageFlags.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates for registries")
	fl.StringVar(&imageFlags.policy, "signature-policy", "", "policy.json (default: the system's, as podman)")
	fl.Int64Var(&imageFlags.maxLayerBytes, "max-layer-bytes", layer.DefaultMaxLayerBytes, "refuse a layer expanding past this many bytes")
	fl.Int64Var(&imageFlags.maxRatio, "max-ratio", layer.DefaultRatio, "refuse a layer expanding past this many times its compressed size (once past 1 GiB)")
	fl.IntVar(&imageFlags.maxEntries, "max-entries", layer.DefaultMaxEntries, "refuse an image with more entries")
	fl.BoolVarP(&imageFlags.quiet, "quiet", "q", false, "no progress display or summary")
	fl.BoolVar(&imageFlags.noVerifySeal, "no-verify-seal", false, "do not check the config's containers.composefs.fsverity label against the image composed from the layers")
	fl.BoolVar(&imageFlags.partial, "partial", true, "read zstd:chunked layers from registries partially: only the files the store lacks")
	fl.BoolVar(&imageFlags.unverified, "insecure-allow-unpredictable-image-contents", false,
		"also read eStargz and tar-split-less zstd:chunked layers partially, although their diff_id cannot be checked (unsafe)")
	rootCmd.AddCommand(imageCmd)
}

func runPull(cmd *cobra.Command, ref string) error {
	sys, err := oci.SystemContext(oci.SysOptions{
		Platform: imageFlags.platform, AuthFile: imageFlags.authfile, Creds: imageFlags.creds,
		TLSVerify: imageFlags.tlsVerify,
	})
	if err != nil {
		return err
	}
	st, err := state.Create(imageFlags.root)
	if err != nil {
		return err
	}
	prog := progress.New(imageFlags.quiet || imageFlags.json)
	var fetcher ocipull.LayerFetcher = ocipull.WholeLayers{}
	if imageFlags.partial {
		fetcher = &ocipull.PartialLayers{State: st, Sys: sys, AllowUnverified: imageFlags.unverified}
	}
	res, err := ocipull.Pull(context.Background(), st, ref, ocipull.PullOptions{
		Name: imageFlags.name, Sys: sys, PolicyPath: imageFlags.policy,
		Limits:       layer.Limits{MaxLayerBytes: imageFlags.maxLayerBytes, Ratio: imageFlags.maxRatio, MaxEntries: imageFlags.maxEntries},
		Progress:     barProgress{prog},
		NoVerifySeal: imageFlags.noVerifySeal,
		Fetcher:      fetcher,
	})
	prog.Wait()
	if err != nil {
		return err
	}
	if imageFlags.json {
		return cli.PrintJSON(os.Stdout, res)
	}
	if res.AlreadyPresent {
		fmt.Printf("%s: already in the store as %s (%s); nothing fetched\n", ref, res.Image.ID()[:12], strings.Join(res.Image.Names, ", "))
		return nil
	}
	if !imageFlags.quiet {
		fmt.Fprintf(os.Stderr, "%d layer(s), %s fetched; %d file(s): %d new (%s), %d already in the store (%s saved)\n",
			res.Layers, human(res.FetchedBytes), res.Files, res.Files-res.FilesPresent, human(res.BytesNew), res.FilesPresent, human(res.BytesPresent))
		if p := res.Partial; p != nil && p.PartialLayers > 0 {
			fmt.Fprintf(os.Stderr, "partial pull: %d layer(s) by range requests (%d whole): %d file(s) fetched (%s), %d already present (%s not fetched)\n",
				p.PartialLayers, p.WholeLayers, p.FilesFetched, human(p.BytesFetched), p.FilesPresent, human(p.BytesSaved))
		}
		if res.UnverifiedLayers > 0 {
			fmt.Fprintf(os.Stderr, "warning: %d layer(s) without tar-split pulled partially: their diff_id was not checked\n", res.UnverifiedLayers)
		}
	}
	fmt.Println(res.Image.ConfigDigest)
	return nil
}

type barProgress struct{ p *progress.Progress }

func (b barProgress) Layer(digest string, size int64) (func(int64), func()) {
	short := strings.TrimPrefix(digest, "sha256:")
	if len(short) > 12 {
		short = short[:12]
	}
	bar := b.p.AddBar(short, size, true)
	var last int64
	return func(n int64) { bar.Add(n - last); last = n }, func() { bar.SetTotal(last, true) }
}

func openState() (*state.State, error) { return state.Open(imageFlags.root) }

func runList() error {
	st, err := openState()
	if err != nil {
		return err
	}
	all, err := st.Containers()
	if err != nil {
		return err
	}
	if imageFlags.json {
		if all == nil {
			all = []*state.ContainerImage{}
		}
		return cli.PrintJSON(os.Stdout, all)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAMES\tPLATFORM\tLAYERS\tFILES\tCREATED")
	for _, c := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", c.ID()[:12], strings.Join(c.Names, ","), c.Platform, len(c.Layers), c.Counts.Files, c.Time.Format("2006-01-02 15:04"))
	}
	return w.Flush()
}

func runInspect(ref string) error {
	st, err := openState()
	if err != nil {
		return err
	}
	c, err := st.FindContainer(ref)
	if err != nil {
		return err
	}
	return cli.PrintJSON(os.Stdout, c)
}

func runRemove(refs []string) error {
	st, err := openState()
	if err != nil {
		return err
	}
	var removed []string
	for _, r := range refs {
		c, err := st.RemoveContainer(r)
		if err != nil {
			return err
		}
		removed = append(removed, c.ConfigDigest)
	}
	if imageFlags.json {
		return cli.PrintJSON(os.Stdout, map[string][]string{"removed": removed})
	}
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	return nil
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
