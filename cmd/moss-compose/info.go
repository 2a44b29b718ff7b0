package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/tree"
	"github.com/spf13/cobra"
)

// info: the composefs-info tool (ls, dump, objects, missing-objects,
// measure-file), reading images with the erofs package.

var infoFlags struct {
	json    bool
	basedir string
}

var infoCmd = &cobra.Command{
	Use:   "info",
	Short: "Inspect composefs images (like composefs-info)",
}

var infoLsCmd = &cobra.Command{
	Use:   "ls IMAGE...",
	Short: "List the paths of images (dirs end in /, symlinks -> target, external files @ payload)",
	Args:  cobra.MinimumNArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runInfoLs(args, infoFlags.json) },
}

var infoDumpCmd = &cobra.Command{
	Use:   "dump IMAGE...",
	Short: "Print images in the composefs-dump(5) format, as composefs-info dump",
	Args:  cobra.MinimumNArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runInfoDump(args) },
}

var infoObjectsCmd = &cobra.Command{
	Use:   "objects IMAGE...",
	Short: "List the backing objects (payload paths) the images reference, sorted, once each",
	Args:  cobra.MinimumNArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runInfoObjects(args, "", infoFlags.json) },
}

var infoMissingCmd = &cobra.Command{
	Use:   "missing-objects --basedir=DIR IMAGE...",
	Short: "List the backing objects of the images that are missing from DIR",
	Args:  cobra.MinimumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		if infoFlags.basedir == "" {
			return errors.New("missing-objects: --basedir=DIR (the object directory) is required")
		}
		st, err := os.Stat(infoFlags.basedir)
		if err != nil {
			return fmt.Errorf("missing-objects: basedir: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("missing-objects: basedir %s is not a directory", infoFlags.basedir)
		}
		return runInfoObjects(args, infoFlags.basedir, infoFlags.json)
	},
}

var infoMeasureCmd = &cobra.Command{
	Use:   "measure-file FILE...",
	Short: "Print the fs-verity digest of files (from the kernel if verity is enabled, else computed)",
	Args:  cobra.MinimumNArgs(1),
	RunE:  func(cmd *cobra.Command, args []string) error { return runInfoMeasure(args) },
}

func init() {
	for _, c := range []*cobra.Command{infoLsCmd, infoObjectsCmd, infoMissingCmd} {
		c.Flags().BoolVar(&infoFlags.json, "json", false, "print one JSON value")
	}
	infoMissingCmd.Flags().StringVar(&infoFlags.basedir, "basedir", "", "object directory to look the objects up in")
	infoCmd.AddCommand(infoLsCmd, infoDumpCmd, infoObjectsCmd, infoMissingCmd, infoMeasureCmd)
	rootCmd.AddCommand(infoCmd)
}

// loadImageTree opens an image file and reads its source tree.
func loadImageTree(path string) (*tree.Node, error) {
	img, closeImg, err := erofs.OpenFile(path, nil)
	if err != nil {
		return nil, err
	}
	defer closeImg()
	root, err := img.Tree()
	if err != nil {
		return nil, err
	}
	return root, nil
}

// infoLsEntry is one path of `info ls --json`.
type infoLsEntry struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Mode     string `json:"mode"`
	Size     uint64 `json:"size"`
	Target   string `json:"target,omitempty"`
	Payload  string `json:"payload,omitempty"`
	Hardlink string `json:"hardlink,omitempty"`
}

type infoLsImage struct {
	Image   string        `json:"image"`
	Entries []infoLsEntry `json:"entries"`
}

func runInfoLs(images []string, asJSON bool) error {
	var out []infoLsImage
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, path := range images {
		root, err := loadImageTree(path)
		if err != nil {
			return err
		}
		if !asJSON {
			if err := erofs.WriteListing(w, root); err != nil {
				return err
			}
			continue
		}
		im := infoLsImage{Image: path, Entries: []infoLsEntry{}}
		_ = root.Walk(func(n *tree.Node) error {
			if n == root {
				return nil
			}
			t := n.Inode()
			e := infoLsEntry{Path: n.Path(), Type: typeName(t.Mode), Mode: fmt.Sprintf("%#o", t.Mode&0o7777), Size: t.Size}
			if n.LinkTo != nil {
				e.Hardlink = t.Path()
			}
			switch t.Mode & tree.TypeMask {
			case tree.TypeLink:
				e.Target = t.Target
			case tree.TypeReg:
				e.Payload = t.Payload
			}
			im.Entries = append(im.Entries, e)
			return nil
		})
		out = append(out, im)
	}
	if asJSON {
		return cli.PrintJSON(w, out)
	}
	return nil
}

func typeName(mode uint32) string {
	switch mode & tree.TypeMask {
	case tree.TypeDir:
		return "dir"
	case tree.TypeReg:
		return "file"
	case tree.TypeLink:
		return "symlink"
	case tree.TypeChar:
		return "chardev"
	case tree.TypeBlock:
		return "blockdev"
	case tree.TypeFifo:
		return "fifo"
	case tree.TypeSock:
		return "socket"
	}
	return "unknown"
}

func runInfoDump(images []string) error {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, path := range images {
		img, closeImg, err := erofs.OpenFile(path, nil)
		if err != nil {
			return err
		}
		err = img.WriteDump(w)
		closeImg()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// runInfoObjects lists the payloads of all images, sorted and unique; with
// basedir only those not present below it.
func runInfoObjects(images []string, basedir string, asJSON bool) error {
	seen := map[string]bool{}
	for _, path := range images {
		root, err := loadImageTree(path)
		if err != nil {
			return err
		}
		_ = root.Walk(func(n *tree.Node) error {
			if n.LinkTo == nil && n.Mode&tree.TypeMask == tree.TypeReg && n.Payload != "" {
				seen[n.Payload] = true
			}
			return nil
		})
	}
	objects := make([]string, 0, len(seen))
	for p := range seen {
		if basedir != "" {
			// composefs-info: fstatat(basedir, payload without leading "/").
			_, err := os.Stat(filepath.Join(basedir, strings.TrimLeft(p, "/")))
			if err == nil {
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("missing-objects: %w", err)
			}
		}
		objects = append(objects, p)
	}
	slices.Sort(objects)
	if asJSON {
		return cli.PrintJSON(os.Stdout, objects)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, p := range objects {
		fmt.Fprintln(w, p)
	}
	return w.Flush()
}

func runInfoMeasure(files []string) error {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, path := range files {
		d, err := measureFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, hex.EncodeToString(d[:]))
	}
	return nil
}

// measureFile asks the kernel for the file's fs-verity digest and computes
// it where verity is not enabled or not supported, as composefs-info does.
func measureFile(path string) ([fsverity.Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [fsverity.Size]byte{}, fmt.Errorf("measure-file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		return [fsverity.Size]byte{}, fmt.Errorf("measure-file: %s is not a regular file", path)
	}
	d, err := fsverity.Measure(int(f.Fd()))
	if err == nil {
		return d, nil
	}
	if !errors.Is(err, fsverity.ErrNotEnabled) && !errors.Is(err, fsverity.ErrNotSupported) {
		return d, fmt.Errorf("measure-file %s: %w", path, err)
	}
	d, err = fsverity.DigestFile(path)
	if err != nil {
		return d, fmt.Errorf("measure-file %s: %w", path, err)
	}
	return d, nil
}
