package main

import (
	"errors"
	"fmt"
	"github.com/mossfs/mossfs/internal/ocipull"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci"
	"github.com/mossfs/mossfs/tree"
)

var exportFlags struct {
	root        string
	json        bool
	quiet       bool
	usrOnly     bool
	compression string
	chunks      string
	entrypoint  []string
	cmd         []string
	env         []string
	labels      []string
	arch        string
	composefs   string
	key         string
	tmpdir      string
	authfile    string
	creds       string
	tlsVerify   bool
}

var exportCmd = &cobra.Command{
	Use:   "export TX|IMAGE DEST",
	Short: "Export a transaction or a container image as an OCI image to a containers-transport destination",
	Long: `Export an OS transaction as an OCI image to any containers-transport destination:
oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, docker://REGISTRY/NAME:TAG (push)
or containers-storage:NAME.

The image is a root filesystem with the transaction's /usr tree at usr/ and the
merged-/usr links bin, sbin, lib, lib64 (and lib32) as moss makes them, or with
--usr-only the /usr tree itself at the root. An exported OS image has NO /etc: a
moss system's /etc belongs to the host, not to a transaction.

The layer is a reproducible tar (sorted entries, the image's own modes, owners,
mtimes and xattrs, no wall-clock times), zstd:chunked by default so that podman
and mossfs can pull it partially, or zstd, gzip or none with --compression.
A zstd:chunked layer has a chunk per file (--chunks files, the default: a pull
fetches the files it does not have); --chunks rolling also cuts files where a
rolling checksum says, as containers/storage's own writer does, byte for byte,
so that podman can reuse the unchanged parts of a changed file (the export then
takes 20-25% longer). The same transaction gives the same manifest digest on
every run for oci:, oci-archive: and docker://; docker-archive: and
containers-storage: convert the manifest, so there only the layers' diff_ids
are stable.

The config carries the label containers.composefs.fsverity (the fs-verity
digest of the composefs image that "image pull" composes from the layers) and
org.mossfs.usr.fsverity (the transaction's own /usr image). --composefs FILE
also writes that composefs image, and with --key a detached signature FILE.sig.

A container image (a name or ID that "image pull" recorded) exports as itself:
its original config (the --entrypoint, --cmd, --env, --label, --arch and
--usr-only flags do not apply; the composefs label is set to the rebuilt
layers') and the same number of layers, rebuilt from the stored fragments, so
their digests are new.`,
	Args: cobra.ExactArgs(2),
	RunE: runExport,
}

func init() {
	f := exportCmd.Flags()
	f.StringVar(&exportFlags.root, "root", state.DefaultRoot, "state root")
	f.BoolVar(&exportFlags.json, "json", false, "print the result as JSON")
	f.BoolVarP(&exportFlags.quiet, "quiet", "q", false, "no progress output")
	f.BoolVar(&exportFlags.usrOnly, "usr-only", false, "export the /usr tree as the image root (no usr/ prefix, no links)")
	f.StringVar(&exportFlags.compression, "compression", oci.CompressionZstdChunked, "layer compression: zstd:chunked, zstd, gzip or none")
	f.StringVar(&exportFlags.chunks, "chunks", "", "zstd:chunked chunks: files (default) or rolling (as containers/storage writes them)")
	exportCmd.RegisterFlagCompletionFunc("compression", cobra.FixedCompletions(
		[]string{oci.CompressionZstdChunked, oci.CompressionZstd, oci.CompressionGzip, oci.CompressionNone}, cobra.ShellCompDirectiveNoFileComp))
	exportCmd.RegisterFlagCompletionFunc("chunks", cobra.FixedCompletions(
		[]string{string(oci.ChunkFiles), string(oci.ChunkRolling)}, cobra.ShellCompDirectiveNoFileComp))
	f.StringArrayVar(&exportFlags.entrypoint, "entrypoint", nil, "config entrypoint (repeat for each argument)")
	f.StringArrayVar(&exportFlags.cmd, "cmd", nil, "config cmd (repeat for each argument)")
	f.StringArrayVar(&exportFlags.env, "env", nil, "config environment variable NAME=VALUE (repeatable)")
	f.StringArrayVar(&exportFlags.labels, "label", nil, "config label NAME=VALUE (repeatable)")
	f.StringVar(&exportFlags.arch, "arch", "", "config architecture (GOARCH spelling; default: this machine's)")
	f.StringVar(&exportFlags.composefs, "composefs", "", "also write the composefs image of the exported root filesystem to this file")
	f.StringVar(&exportFlags.key, "key", "", "with --composefs: sign the image with this Ed25519 key into FILE.sig")
	f.StringVar(&exportFlags.tmpdir, "tmpdir", "", "directory for the staging layout (default: $TMPDIR)")
	f.StringVar(&exportFlags.authfile, "authfile", "", "registry auth file (as podman's)")
	f.StringVar(&exportFlags.creds, "creds", "", "registry credentials USER:PASSWORD")
	f.BoolVar(&exportFlags.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when pushing")
	rootCmd.AddCommand(exportCmd)
}

func runExport(cmd *cobra.Command, args []string) error {
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || id == 0 {
		return runExportContainer(cmd, args)
	}
	if exportFlags.key != "" && exportFlags.composefs == "" {
		return errors.New("export: --key signs the --composefs image: give --composefs FILE too")
	}
	labels := map[string]string{}
	for _, l := range exportFlags.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("export: --label %q: want NAME=VALUE", l)
		}
		labels[k] = v
	}
	for _, e := range exportFlags.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("export: --env %q: want NAME=VALUE", e)
		}
	}
	s, err := state.Open(exportFlags.root)
	if err != nil {
		return err
	}
	lk, err := s.Lock() // gc waits: the objects stay while we read them
	if err != nil {
		return err
	}
	defer lk.Unlock()
	tx, err := s.Get(id)
	if err != nil {
		return err
	}
	usr, err := s.Tree(tx)
	if err != nil {
		return err
	}
	root := usr
	if !exportFlags.usrOnly {
		if root, err = oci.RootFS(usr); err != nil {
			return err
		}
	}
	req, objs, err := exportRequest(s, args[1])
	if err != nil {
		return err
	}
	defer objs.Close()
	req.Layers = []*tree.Node{root}
	req.Config = oci.ExportConfig{
		Entrypoint: exportFlags.entrypoint,
		Cmd:        exportFlags.cmd,
		Env:        exportFlags.env,
		Labels:     labels,
		Arch:       exportFlags.arch,
		Created:    tx.Time,
		CreatedBy:  fmt.Sprintf("moss-compose export %d (transaction image %s)", tx.ID, tx.Image),
	}
	req.UsrDigest = tx.Image
	res, err := oci.Export(cmd.Context(), req)
	if err != nil {
		return err
	}
	return finishExport(res, tx.ID, fmt.Sprintf("transaction %d", tx.ID))
}

// exportRequest is what both exports (a transaction, a container image)
// share: the store's contents, the compression, the destination and its
// system context (auth, TLS), the staging directory and the progress
// writer (a terminal only, and never with --quiet or --json). The caller
// closes the returned object directory after the export.
func exportRequest(s *state.State, dest string) (oci.ExportRequest, *oci.ObjectDir, error) {
	sys, err := oci.DestSystemContext(exportFlags.authfile, exportFlags.creds, exportFlags.tlsVerify)
	if err != nil {
		return oci.ExportRequest{}, nil, err
	}
	objs, err := oci.OpenObjectDir(s.Store().ObjectsDir())
	if err != nil {
		return oci.ExportRequest{}, nil, err
	}
	// The objects' sha256 as the store recorded them: zstd:chunked's TOC
	// names each file by its sha256, and these spare hashing every
	// content a second time. Without a record, a file is hashed.
	var shas map[[32]byte][32]byte
	if c := exportFlags.compression; c == "" || c == oci.CompressionZstdChunked {
		if shas, err = s.ObjectSHA256s(); err != nil {
			fmt.Fprintf(os.Stderr, "moss-compose: export: %v; hashing every file instead\n", err)
			shas = nil
		}
	}
	req := oci.ExportRequest{
		Open:          objs.Open,
		ContentSHA256: shas,
		Compression:   exportFlags.compression,
		Chunks:        oci.Chunking(exportFlags.chunks),
		Dest:          dest,
		Sys:           sys,
		TempDir:       exportFlags.tmpdir,
	}
	if !exportFlags.quiet && !exportFlags.json && cli.IsTerminal(os.Stderr) {
		req.Report = os.Stderr
	}
	return req, objs, nil
}

// finishExport writes the --composefs image and signature (signed for id)
// and prints the result.
func finishExport(res *oci.ExportResult, id uint64, what string) error {
	if exportFlags.composefs != "" {
		if err := writeExportFile(exportFlags.composefs, res.Image, 0o644); err != nil {
			return fmt.Errorf("export: --composefs: %w", err)
		}
		if exportFlags.key != "" {
			key, err := sign.LoadPrivateKey(exportFlags.key)
			if err != nil {
				return err
			}
			d, err := oci.ParseHexDigest(res.Composefs)
			if err != nil {
				return err
			}
			if err := writeExportFile(exportFlags.composefs+".sig", sign.Encode(sign.Sign(key, id, d)), 0o644); err != nil {
				return fmt.Errorf("export: signature: %w", err)
			}
		}
	}
	for _, p := range res.Skipped {
		fmt.Fprintf(os.Stderr, "moss-compose: export: %s: a socket cannot be carried in a tar layer; left out\n", p)
	}
	if exportFlags.json {
		return cli.PrintJSON(os.Stdout, res)
	}
	fmt.Printf("exported %s to %s\nmanifest %s\nconfig   %s\ncomposefs fs-verity %s\n",
		what, res.Dest, res.ManifestDigest, res.ConfigDigest, res.Composefs)
	return nil
}

// runExportContainer exports a recorded container image as itself.
func runExportContainer(cmd *cobra.Command, args []string) error {
	for _, f := range []string{"entrypoint", "cmd", "env", "label", "arch", "usr-only"} {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("export: %s is a container image, exported with its own config: --%s does not apply", args[0], f)
		}
	}
	if exportFlags.key != "" && exportFlags.composefs == "" {
		return errors.New("export: --key signs the --composefs image: give --composefs FILE too")
	}
	s, err := state.Open(exportFlags.root)
	if err != nil {
		return err
	}
	lk, err := s.Lock()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	c, err := s.FindContainer(args[0])
	if err != nil {
		return fmt.Errorf("export %s: not a transaction id, and %w", args[0], err)
	}
	config, layers, err := ocipull.ContainerLayers(s, c)
	if err != nil {
		return err
	}
	req, objs, err := exportRequest(s, args[1])
	if err != nil {
		return err
	}
	defer objs.Close()
	req.Layers, req.BaseConfig = layers, config
	res, err := oci.Export(cmd.Context(), req)
	if err != nil {
		return err
	}
	return finishExport(res, 0, "container image "+c.ID())
}

// writeExportFile writes data to path through a temporary file in the same
// directory, synced and renamed into place.
func writeExportFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(exportDirOf(path), ".tmp-export-")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func exportDirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		if i == 0 {
			return "/"
		}
		return p[:i]
	}
	return "."
}
