package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/pki"
)

// TLSEnv is the service behind a real TLS listener configured as `serve` configures it
// (pki.ServerConfig, HTTP/2 on), with an agent CA of its own.
type TLSEnv struct {
	*Env
	CADir string
	CA    *pki.CA
	// Roots trusts the server's (self-signed) certificate.
	Roots *x509.CertPool
}

// NewTLS starts the service on dsn over TLS with a fresh agent CA.
func NewTLS(t testing.TB, dsn string, opts ...Option) *TLSEnv {
	t.Helper()
	return NewTLSWith(t, dsn, nil, opts...)
}

// NewTLSWith is NewTLS with the service's handler wrapped by wrap (fault injection).
func NewTLSWith(t testing.TB, dsn string, wrap func(http.Handler) http.Handler, opts ...Option) *TLSEnv {
	t.Helper()
	clock := NewClock()
	caDir := filepath.Join(t.TempDir(), "ca")
	// The CA is valid from the service's clock, which the tests move (expiry without waiting).
	ca, err := pki.Init(caDir, "test agent CA", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := app.Defaults()
	cfg.DB, cfg.Now, cfg.AgentCADir = dsn, clock.Now, caDir
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	cert, _, err := pki.SelfSigned("127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = a.Handler
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = pki.ServerConfig([]tls.Certificate{cert}, a.CA.Pool())
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests are about
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		a.Close()
	})
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	e := &TLSEnv{Env: &Env{T: t, DSN: dsn, App: a, Server: srv, Clock: clock}, CADir: caDir, CA: ca, Roots: roots}
	e.HTTP = e.Client(nil)
	return e
}

// RequireMTLS is the --require-agent-mtls option.
func RequireMTLS(c *app.Config) { c.RequireAgentMTLS = true }

// Client returns a client that trusts the server and presents cert (nil: no certificate).
func (e *TLSEnv) Client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: e.Roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// DoWith sends a request like Env.Do, through client.
func (e *TLSEnv) DoWith(client *http.Client, method, path, token string, body any, header ...string) *Response {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.T.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.Server.URL+path, rd)
	if err != nil {
		e.T.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		e.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
	_ = json.Unmarshal(data, &out.JSON)
	return out
}

// GQLWith posts a GraphQL operation through client.
func (e *TLSEnv) GQLWith(client *http.Client, token, query string, vars map[string]any) *GQLResult {
	e.T.Helper()
	resp := e.DoWith(client, http.MethodPost, "/query", token, map[string]any{"query": query, "variables": vars})
	var out struct {
		Data   map[string]any `json:"data"`
		Errors []GQLError     `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		e.T.Fatalf("GraphQL answer is not JSON (%d): %s", resp.Status, resp.Body)
	}
	return &GQLResult{Status: resp.Status, Data: out.Data, Errors: out.Errors, Raw: resp.Body}
}
