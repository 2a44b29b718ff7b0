package ocitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TokenServer is the token server of a registry set up for the bearer-token
// flow (docker distribution's "auth: token:"): it runs in the test on a free
// loopback port, checks a user's basic credentials and issues a JWT for the
// scopes asked, signed (ES256) with a key whose self-signed certificate is
// the registry's rootcertbundle and travels in the token's x5c header.
// Requests without valid credentials get 401.
type TokenServer struct {
	Realm   string // http://127.0.0.1:PORT/token
	Service string // the registry's service name: the tokens' audience
	Issuer  string
	// CertPath is the PEM certificate the registry trusts (rootcertbundle).
	CertPath string

	users map[string]string
	key   *ecdsa.PrivateKey
	der   []byte

	mu      sync.Mutex
	issued  int
	refused int
	forge   bool
}

// Forge makes the server sign the tokens it issues from now on with another
// key than its certificate's (forge=true): a registry that checks them
// refuses them. Tests use it to show the registry's check is in force.
func (ts *TokenServer) Forge(forge bool) {
	ts.mu.Lock()
	ts.forge = forge
	ts.mu.Unlock()
}

// StartTokenServer generates the signing key and its certificate into dir
// and starts the server; t.Cleanup stops it.
func StartTokenServer(t testing.TB, dir string, users map[string]string) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "mossfs test token issuer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &TokenServer{Service: "mossfs-test-registry", Issuer: "mossfs-test-token-issuer",
		CertPath: filepath.Join(dir, "token-root.pem"), users: users, key: key, der: der}
	if err := os.WriteFile(ts.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Realm = "http://" + l.Addr().String() + "/token"
	srv := &http.Server{Handler: http.HandlerFunc(ts.serve), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ts
}

// Counts reports the tokens issued and the requests refused so far.
func (ts *TokenServer) Counts() (issued, refused int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued, ts.refused
}

// registryConfig is the registry configuration's auth section.
func (ts *TokenServer) registryConfig() string {
	return fmt.Sprintf("auth: {token: {realm: %q, service: %q, issuer: %q, rootcertbundle: %q}}\n", ts.Realm, ts.Service, ts.Issuer, ts.CertPath)
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, msg string) {
		ts.mu.Lock()
		ts.refused++
		ts.mu.Unlock()
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="mossfs-test-token"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}}})
	}
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		refuse(http.StatusUnauthorized, "credentials required")
		return
	}
	if want, known := ts.users[user]; !known || want != pass {
		refuse(http.StatusUnauthorized, "wrong user name or password")
		return
	}
	q := r.URL.Query()
	if s := q.Get("service"); s != ts.Service {
		refuse(http.StatusBadRequest, fmt.Sprintf("unknown service %q", s))
		return
	}
	// scope=repository:NAME:pull,push (repeated, or space-separated);
	// every action asked for is granted to a known user.
	access := []resourceActions{}
	for _, v := range q["scope"] {
		for _, sc := range strings.Fields(v) {
			typ, rest, ok1 := strings.Cut(sc, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok1 || i < 0 {
				refuse(http.StatusBadRequest, fmt.Sprintf("malformed scope %q", sc))
				return
			}
			access = append(access, resourceActions{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")})
		}
	}
	now := time.Now()
	jti := make([]byte, 16)
	rand.Read(jti)
	header := map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.der)}}
	claims := map[string]any{
		"iss": ts.Issuer, "sub": user, "aud": ts.Service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti), "access": access,
	}
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	var err error
	key := ts.key
	ts.mu.Lock()
	forge := ts.forge
	ts.mu.Unlock()
	if forge {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	rr, ss, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// JWS ES256: r and s, each 32 bytes big-endian.
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	token := signed + "." + base64.RawURLEncoding.EncodeToString(sig)
	ts.mu.Lock()
	ts.issued++
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": token, "access_token": token, "expires_in": 300, "issued_at": now.UTC().Format(time.RFC3339)})
}
