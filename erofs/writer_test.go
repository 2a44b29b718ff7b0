package erofs

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

func assetWriteOptions(a composefsAsset) WriteOptions {
	if a.version >= 0 {
		return WriteOptions{MinVersion: a.version, MaxVersion: a.version}
	}
	return DefaultWriteOptions()
}

// TestWriteImageAssets checks that every positive composefs asset gives the
// image mkcomposefs 1.0.8 gives (sha256 from upstream's test suite).
func TestWriteImageAssets(t *testing.T) {
	positive, _ := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			img, err := BuildImage(root, assetWriteOptions(a))
			if err != nil {
				t.Fatalf("BuildImage: %v", err)
			}
			sum := sha256.Sum256(img)
			if got := hex.EncodeToString(sum[:]); got != a.sha256 {
				golden := testenv.SharedPath(t, "testdata", "composefs", "golden-images", a.name+".cfs")
				if want, err := os.ReadFile(golden); err == nil {
					t.Errorf("image differs from %s: %s", filepath.Base(golden), diffImages(img, want))
				}
				t.Fatalf("image sha256 %s, want %s", got, a.sha256)
			}
		})
	}
}
