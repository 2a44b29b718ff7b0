package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/tree"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runSign runs moss-compose in-process with the flags of keygen and state
// sign reset first.
func runSign(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, c := range []*cobra.Command{keygenCmd, signCmd} {
		c.Flags().VisitAll(func(f *pflag.Flag) { f.Value.Set(f.DefValue); f.Changed = false })
	}
	var out bytes.Buffer
	old := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	w.Close()
	os.Stdout = old
	out.ReadFrom(r)
	return out.String(), err
}

func TestKeygenAndStateSign(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	if _, err := state.Create(root); err != nil {
		t.Fatal(err)
	}
	img, err := erofs.BuildImage(tree.NewDir("", 0o755), erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	d := fsverity.Sum(img)
	h := hex.EncodeToString(d[:])
	os.WriteFile(filepath.Join(root, "images", h), img, 0o644)
	meta, _ := json.Marshal(state.Transaction{ID: 4, Time: time.Now().UTC(), Image: h, Inputs: []state.Input{}})
	os.WriteFile(filepath.Join(root, "transactions", "4.json"), meta, 0o644)

	key := filepath.Join(t.TempDir(), "k")
	out, err := runSign(t, "keygen", key, "--json")
	if err != nil || !strings.Contains(out, `"public_key": "`+key+`.pub"`) {
		t.Fatalf("keygen: %v %q", err, out)
	}
	if _, err := runSign(t, "keygen", key); err == nil {
		t.Error("keygen overwrote a key")
	}
	if _, err := runSign(t, "state", "sign", "4", "--root", root); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Errorf("sign without --key: %v", err)
	}
	if _, err := runSign(t, "state", "sign", "5", "--root", root, "--key", key); err == nil {
		t.Error("signed a transaction that does not exist")
	}
	out, err = runSign(t, "state", "sign", "4", "--root", root, "--key", key)
	if err != nil || !strings.Contains(out, "signed transaction 4") {
		t.Fatalf("sign: %v %q", err, out)
	}
	pub, _ := sign.LoadPublicKey(key + ".pub")
	if err := sign.VerifyTransaction(root, pub, 4, d); err != nil {
		t.Error(err)
	}
	// A corrupt image is not signed.
	bad := append([]byte(nil), img...)
	bad[len(bad)-1] ^= 1
	os.WriteFile(filepath.Join(root, "images", h), bad, 0o644)
	if _, err := runSign(t, "state", "sign", "4", "--root", root, "--key", key); err == nil || !strings.Contains(err.Error(), "corrupt image") {
		t.Errorf("signing a corrupt image: %v", err)
	}
}
