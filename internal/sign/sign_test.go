package sign

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
)

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	pub, err := GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode())
	}
	if _, err := GenerateKey(keyPath); err == nil {
		t.Error("GenerateKey overwrote an existing key")
	}
	priv, err := LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := LoadPublicKey(keyPath + ".pub")
	if err != nil || !pub2.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := LoadPublicKey(keyPath); err == nil || !strings.Contains(err.Error(), "PUBLIC KEY") {
		t.Errorf("private key accepted as public key: %v", err)
	}

	state := filepath.Join(dir, "state")
	os.MkdirAll(filepath.Join(state, "transactions"), 0o755)
	d7 := [32]byte{7, 7, 7}
	d8 := [32]byte{8, 8, 8}
	if err := VerifyTransaction(state, pub, 7, d7); !errors.Is(err, ErrNoSignature) {
		t.Errorf("unsigned: %v", err)
	}
	p, err := WriteSignature(state, priv, 7, d7)
	if err != nil || p != filepath.Join(state, "transactions", "7.sig") {
		t.Fatal(p, err)
	}
	if err := VerifyTransaction(state, pub, 7, d7); err != nil {
		t.Errorf("good signature: %v", err)
	}
	// Same id, other image; same image, other id; another key.
	if err := VerifyTransaction(state, pub, 7, d8); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other image: %v", err)
	}
	data, _ := os.ReadFile(p)
	os.WriteFile(Path(state, 8), data, 0o644)
	if err := VerifyTransaction(state, pub, 8, d7); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature moved to another id: %v", err)
	}
	other, _ := GenerateKey(filepath.Join(dir, "other"))
	if err := VerifyTransaction(state, other, 7, d7); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v", err)
	}
	os.WriteFile(p, []byte("garbage\n"), 0o644)
	if err := VerifyTransaction(state, pub, 7, d7); err == nil || !strings.Contains(err.Error(), "7.sig") {
		t.Errorf("garbage signature file: %v", err)
	}
}

// TestOpenSSLInterop checks the key files and the signature against
// OpenSSL (an independent Ed25519 implementation), when it is installed.
func TestOpenSSLInterop(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	if _, err := GenerateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	priv, _ := LoadPrivateKey(keyPath)
	d := [32]byte{1, 2, 3}
	msg := filepath.Join(dir, "msg")
	os.WriteFile(msg, Message(42, d), 0o644)
	sig := filepath.Join(dir, "sig")
	os.WriteFile(sig, Sign(priv, 42, d), 0o644)
	out, err := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", keyPath+".pub", "-rawin", "-in", msg, "-sigfile", sig).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// And an OpenSSL-made key loads.
	okey := filepath.Join(dir, "okey")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", okey).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	if _, err := LoadPrivateKey(okey); err != nil {
		t.Errorf("OpenSSL key: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(make([]byte, 64)))
	f.Add([]byte("mossfs-signature-v1 ed25519 !!!"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if sig, err := Decode(data, "fuzz"); err == nil && len(sig) != 64 {
			t.Fatalf("accepted %d-byte signature", len(sig))
		}
	})
}

func TestVerifyImageFile(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	pub, _ := GenerateKey(keyPath)
	priv, _ := LoadPrivateKey(keyPath)
	os.MkdirAll(filepath.Join(dir, "transactions"), 0o755)
	img := filepath.Join(dir, "img")
	os.WriteFile(img, []byte("image bytes"), 0o644)
	d, measured, err := ImageDigest(img)
	if err != nil || measured || d != fsverity.Sum([]byte("image bytes")) {
		t.Fatalf("ImageDigest: %x %v %v", d, measured, err)
	}
	WriteSignature(dir, priv, 3, d)
	if err := VerifyImageFile(dir, pub, 3, img); err != nil {
		t.Error(err)
	}
	os.WriteFile(img, []byte("image bytez"), 0o644)
	if err := VerifyImageFile(dir, pub, 3, img); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed image: %v", err)
	}
}
