package oci

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// SealError is returned when an image's containers.composefs.fsverity label
// names another composefs image than the one its layers compose to.
type SealError struct {
	Label    string // the digest the config's label claims
	Composed string // the digest of the image composed from the layers
}

func (e *SealError) Error() string {
	return fmt.Sprintf("the config's %s label says %s, but the composefs image composed from the layers has fs-verity digest %s (--no-verify-seal skips this check)",
		LabelComposefs, e.Label, e.Composed)
}

// VerifySeal checks an image's composefs seal: when labels carry
// LabelComposefs, the composefs image of root (the merged tree of the
// image's layers, as pulled) must have that fs-verity digest. An image
// without the label passes. It returns the composed digest (hex) when it
// built the image, so a caller may reuse the check's work.
func VerifySeal(labels map[string]string, root *tree.Node) (string, error) {
	want, ok := labels[LabelComposefs]
	if !ok {
		return "", nil
	}
	want = strings.ToLower(strings.TrimSpace(want))
	if b, err := hex.DecodeString(want); err != nil || len(b) != 32 {
		return "", fmt.Errorf("the config's %s label %q is not a hex SHA-256 digest", LabelComposefs, labels[LabelComposefs])
	}
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		return "", fmt.Errorf("composefs seal: %w", err)
	}
	d := fsverity.Sum(img)
	got := hex.EncodeToString(d[:])
	if got != want {
		return got, &SealError{Label: want, Composed: got}
	}
	return got, nil
}
