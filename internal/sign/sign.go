// Package sign signs mossfs transactions with Ed25519. A signature covers
// the transaction id together with the fs-verity digest of its image, so a
// signed image cannot be presented under another id (an old signed image
// standing in for a newer transaction) and a signed id cannot be given
// another image. Keys are PEM files (PKCS#8 private key, PKIX public key),
// interchangeable with OpenSSL's; a transaction's signature is stored beside
// its metadata as transactions/<id>.sig.
package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/fsverity"
)

// ErrBadSignature is wrapped when a signature does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// ErrNoSignature is wrapped when a transaction has no signature file.
var ErrNoSignature = errors.New("transaction is not signed")

const sigHeader = "mossfs-signature-v1 ed25519 "

// Message is the byte string that is signed for transaction id with image
// digest: a fixed domain string, the decimal id and the hex digest, so that
// no other mossfs or foreign signature can be reused for it.
func Message(id uint64, imageDigest [32]byte) []byte {
	return []byte("mossfs transaction signature v1\ntx " + strconv.FormatUint(id, 10) +
		"\nimage sha256:" + hex.EncodeToString(imageDigest[:]) + "\n")
}

// Sign signs transaction id with image digest.
func Sign(key ed25519.PrivateKey, id uint64, imageDigest [32]byte) []byte {
	return ed25519.Sign(key, Message(id, imageDigest))
}

// Verify checks a signature of transaction id with image digest.
func Verify(pub ed25519.PublicKey, id uint64, imageDigest [32]byte, sig []byte) error {
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, Message(id, imageDigest), sig) {
		return fmt.Errorf("transaction %d with image sha256:%x: %w", id, imageDigest, ErrBadSignature)
	}
	return nil
}

// GenerateKey makes a new key pair and writes the private key to privPath
// (mode 0600, refusing to overwrite) and the public key to privPath+".pub".
func GenerateKey(privPath string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	f, err := os.OpenFile(privPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(privPath)
		return nil, fmt.Errorf("keygen: writing %s: %w", privPath, err)
	}
	if err := writeAtomic(privPath+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	return pub, nil
}

func readPEM(path, want string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: not a PEM file", path)
	}
	if b.Type != want {
		return nil, fmt.Errorf("%s: PEM block %q, want %q", path, b.Type, want)
	}
	return b.Bytes, nil
}

// LoadPrivateKey reads a PEM PKCS#8 Ed25519 private key.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s: %T, want an Ed25519 key", path, k)
	}
	return priv, nil
}

// LoadPublicKey reads a PEM PKIX Ed25519 public key.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: %T, want an Ed25519 key", path, k)
	}
	return pub, nil
}

// Path is where the signature of transaction id lives under a state root.
func Path(stateRoot string, id uint64) string {
	return filepath.Join(stateRoot, "transactions", strconv.FormatUint(id, 10)+".sig")
}

// Encode formats a signature file: one line, a header naming the scheme,
// then the base64 signature.
func Encode(sig []byte) []byte {
	return []byte(sigHeader + base64.StdEncoding.EncodeToString(sig) + "\n")
}

// Decode parses a signature file.
func Decode(data []byte, name string) ([]byte, error) {
	s := strings.TrimSpace(string(data))
	b64, ok := strings.CutPrefix(s, sigHeader)
	if !ok {
		return nil, fmt.Errorf("signature %s: want a line starting %q", name, strings.TrimSpace(sigHeader))
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signature %s: not a base64 %d-byte Ed25519 signature", name, ed25519.SignatureSize)
	}
	return sig, nil
}

// WriteSignature signs transaction id (image digest) under stateRoot,
// replacing any previous signature atomically.
func WriteSignature(stateRoot string, key ed25519.PrivateKey, id uint64, imageDigest [32]byte) (string, error) {
	p := Path(stateRoot, id)
	// Private, as everything under the state root but state.PublicRecords.
	if err := writeAtomic(p, Encode(Sign(key, id, imageDigest)), 0o600); err != nil {
		return "", fmt.Errorf("sign transaction %d: %w", id, err)
	}
	return p, nil
}

// VerifyTransaction checks the stored signature of transaction id against
// imageDigest, the digest of the image actually found (measured or
// computed), not the one its metadata claims.
func VerifyTransaction(stateRoot string, pub ed25519.PublicKey, id uint64, imageDigest [32]byte) error {
	p := Path(stateRoot, id)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("transaction %d: %w (no %s)", id, ErrNoSignature, p)
	}
	if err != nil {
		return fmt.Errorf("transaction %d: %w", id, err)
	}
	sig, err := Decode(data, p)
	if err != nil {
		return err
	}
	return Verify(pub, id, imageDigest, sig)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(mode), f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ImageDigest returns the fs-verity digest of the file at path: measured by
// the kernel when the file has fs-verity (cheap, and what the kernel will
// enforce), otherwise computed from its content. measured says which.
func ImageDigest(path string) (d [32]byte, measured bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return d, false, err
	}
	defer f.Close()
	return ImageDigestFile(f)
}

// ImageDigestFile is ImageDigest of an open image: a caller that goes on to
// mount the image through the same descriptor (/proc/self/fd/N) mounts the
// file it checked, even if the name is replaced meanwhile.
func ImageDigestFile(f *os.File) (d [32]byte, measured bool, err error) {
	if d, err := fsverity.Measure(int(f.Fd())); err == nil {
		return d, true, nil
	}
	d, err = fsverity.DigestReaderAt(f, fileSize(f))
	if err != nil {
		return d, false, fmt.Errorf("digest of %s: %w", f.Name(), err)
	}
	return d, false, nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// VerifyImageFile checks transaction id's signature against the image file
// actually at imagePath (for mossfs switch --pubkey and mossfs boot --pubkey).
func VerifyImageFile(stateRoot string, pub ed25519.PublicKey, id uint64, imagePath string) error {
	d, _, err := ImageDigest(imagePath)
	if err != nil {
		return fmt.Errorf("transaction %d: %w", id, err)
	}
	return VerifyTransaction(stateRoot, pub, id, d)
}
