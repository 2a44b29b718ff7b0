package chunked

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// Registry reads blobs of one repository of an OCI distribution registry
// with HTTP range requests, using plain net/http: containers/image has range
// reads (GetBlobAt) only behind its internal types. The caller resolves
// registries.conf (Insecure, TLS) and auth.json (Username/Password or
// IdentityToken) and fills them in; Registry does the bearer-token flow.
type Registry struct {
	Host       string // registry host[:port]; "docker.io" means registry-1.docker.io
	Repository string // e.g. "library/debian"
	// Insecure allows plain http and unverified TLS (registries.conf
	// insecure=true, --tls-verify=false).
	Insecure      bool
	TLSConfig     *tls.Config // nil: system roots
	Username      string
	Password      string
	IdentityToken string
	UserAgent     string

	once   sync.Once
	client *http.Client
	mu     sync.Mutex
	base   string // "https://host" or "http://host" once known
	authz  string // Authorization header value once known
}

// Blob returns a RangeReader for one blob of the repository.
func (r *Registry) Blob(digest string) RangeReader { return &registryBlob{r: r, digest: digest} }

type registryBlob struct {
	r      *Registry
	digest string
}

func (r *Registry) init() {
	r.once.Do(func() {
		tc := r.TLSConfig
		if tc == nil {
			tc = &tls.Config{}
		}
		tc = tc.Clone()
		if r.Insecure {
			tc.InsecureSkipVerify = true
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tc
		r.client = &http.Client{Transport: t}
	})
}

func (r *Registry) host() string {
	if r.Host == "docker.io" {
		return "registry-1.docker.io"
	}
	return r.Host
}

// do sends a GET to path (beneath the registry), finding the scheme and
// authenticating on the way.
func (r *Registry) do(ctx context.Context, path string, hdr http.Header) (*http.Response, error) {
	r.init()
	r.mu.Lock()
	base, authz := r.base, r.authz
	r.mu.Unlock()
	bases := []string{base}
	if base == "" {
		bases = []string{"https://" + r.host()}
		if r.Insecure {
			bases = append(bases, "http://"+r.host())
		}
	}
	var resp *http.Response
	var err error
	for _, b := range bases {
		resp, err = r.get(ctx, b+path, hdr, authz)
		if err == nil {
			base = b
			break
		}
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.base = base
	r.mu.Unlock()
	if resp.StatusCode != http.StatusUnauthorized {
		return resp, nil
	}
	challenge := resp.Header.Get("WWW-Authenticate")
	resp.Body.Close()
	authz, err = r.authenticate(ctx, challenge)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", r.Host, err)
	}
	r.mu.Lock()
	r.authz = authz
	r.mu.Unlock()
	return r.get(ctx, base+path, hdr, authz)
}

func (r *Registry) get(ctx context.Context, u string, hdr http.Header, authz string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if r.UserAgent != "" {
		req.Header.Set("User-Agent", r.UserAgent)
	}
	return r.client.Do(req)
}

// authenticate answers a 401 challenge: Basic with the credentials, or
// Bearer with a token from the realm (anonymous when there are none).
func (r *Registry) authenticate(ctx context.Context, challenge string) (string, error) {
	scheme, params := parseChallenge(challenge)
	switch strings.ToLower(scheme) {
	case "basic":
		if r.Username == "" {
			return "", errors.New("authentication required and no credentials given")
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
		req.SetBasicAuth(r.Username, r.Password)
		return req.Header.Get("Authorization"), nil
	case "bearer":
	default:
		return "", fmt.Errorf("unsupported authentication challenge %q", challenge)
	}
	realm := params["realm"]
	ru, err := url.Parse(realm)
	if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") {
		return "", fmt.Errorf("bearer realm %q is not an http(s) URL", realm)
	}
	q := ru.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := params["scope"]
	if scope == "" {
		scope = "repository:" + r.Repository + ":pull"
	}
	q.Set("scope", scope)
	ru.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ru.String(), nil)
	if err != nil {
		return "", err
	}
	switch {
	case r.IdentityToken != "":
		req.SetBasicAuth("<token>", r.IdentityToken)
	case r.Username != "":
		req.SetBasicAuth(r.Username, r.Password)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token request to %s: %s", ru.Host, resp.Status)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return "", fmt.Errorf("token response: %w", err)
	}
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	if t == "" {
		return "", errors.New("token response without a token")
	}
	return "Bearer " + t, nil
}

// parseChallenge splits `Scheme k="v", k2=v2` (values may hold commas).
func parseChallenge(s string) (string, map[string]string) {
	s = strings.TrimSpace(s)
	scheme, rest, _ := strings.Cut(s, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, r, _ := strings.Cut(v, ",")
			params[k], rest = strings.TrimSpace(val), r
		}
		rest = strings.TrimLeft(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return scheme, params
}

func (b *registryBlob) ReadRanges(ctx context.Context, ranges []Range, fn func(Range, io.Reader) error) error {
	if len(ranges) == 0 {
		return nil
	}
	var spec strings.Builder
	spec.WriteString("bytes=")
	for i, rg := range ranges {
		if rg.Len <= 0 || rg.Off < 0 {
			return fmt.Errorf("invalid range [%d,+%d)", rg.Off, rg.Len)
		}
		if i > 0 {
			spec.WriteByte(',')
		}
		fmt.Fprintf(&spec, "%d-%d", rg.Off, rg.End()-1)
	}
	resp, err := b.r.do(ctx, "/v2/"+b.r.Repository+"/blobs/"+b.digest, http.Header{"Range": {spec.String()}})
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.digest, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		return fmt.Errorf("blob %s: registry answered a range request with the whole blob: %w", b.digest, ErrRangesRefused)
	case http.StatusBadRequest, http.StatusRequestedRangeNotSatisfiable, http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
		if len(ranges) > 1 {
			return fmt.Errorf("blob %s: %s for %d ranges: %w", b.digest, resp.Status, len(ranges), ErrTooManyRanges)
		}
		return fmt.Errorf("blob %s: %s for a range request: %w", b.digest, resp.Status, ErrRangesRefused)
	default:
		return fmt.Errorf("blob %s: %s", b.digest, resp.Status)
	}
	return servePartial(resp.Header, resp.Body, ranges, fn)
}

// servePartial reads a 206 answer (one Content-Range, or multipart/byteranges
// whose parts may each cover several of the requested ranges) and hands every
// requested range to fn in order.
func servePartial(h http.Header, body io.Reader, ranges []Range, fn func(Range, io.Reader) error) error {
	i := 0
	part := func(cr string, r io.Reader) error {
		start, end, err := parseContentRange(cr)
		if err != nil {
			return err
		}
		pos := start
		for ; i < len(ranges) && ranges[i].Off >= pos && ranges[i].End() <= end; i++ {
			if _, err := io.CopyN(io.Discard, r, ranges[i].Off-pos); err != nil {
				return fmt.Errorf("part %s: %w", cr, err)
			}
			lr := &io.LimitedReader{R: r, N: ranges[i].Len}
			if err := fn(ranges[i], lr); err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, lr); err != nil {
				return fmt.Errorf("part %s: %w", cr, err)
			}
			if lr.N != 0 {
				return fmt.Errorf("part %s ended %d bytes early", cr, lr.N)
			}
			pos = ranges[i].End()
		}
		return nil
	}
	mt, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt != "multipart/byteranges" {
		if err := part(h.Get("Content-Range"), body); err != nil {
			return err
		}
	} else {
		if params["boundary"] == "" {
			return errors.New("multipart/byteranges answer without a boundary")
		}
		mr := multipart.NewReader(body, params["boundary"])
		for i < len(ranges) {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("multipart answer: %w", err)
			}
			if err := part(p.Header.Get("Content-Range"), p); err != nil {
				return err
			}
		}
	}
	if i != len(ranges) {
		return fmt.Errorf("registry answered %d of %d ranges", i, len(ranges))
	}
	return nil
}

// parseContentRange parses "bytes a-b/size" into [a, b+1).
func parseContentRange(s string) (int64, int64, error) {
	r, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("Content-Range %q is not a byte range", s)
	}
	r, _, _ = strings.Cut(r, "/")
	a, b, ok := strings.Cut(r, "-")
	start, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || last < start {
		return 0, 0, fmt.Errorf("Content-Range %q is malformed", s)
	}
	return start, last + 1, nil
}
