package auth

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/pki"
)

// The per-request cost of the certificate checks on a keep-alive connection (BENCHMARKS.md,
// "Heartbeats over mTLS"): the middleware and the heartbeat's certificate stage, for a request
// without a certificate and for one whose certificate is already verified (cached by its
// fingerprint, as every request after a connection's first is).
//
//	go test -run '^$' -bench ClientCertificateChecks -benchtime 2s ./internal/auth/
func BenchmarkClientCertificateChecks(b *testing.B) {
	now := time.Now()
	ca, err := pki.Init(filepath.Join(b.TempDir(), "ca"), "", now)
	if err != nil {
		b.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("bench")
	if err != nil {
		b.Fatal(err)
	}
	csr, err := pki.ParseCSR(string(csrPEM))
	if err != nil {
		b.Fatal(err)
	}
	iss, err := ca.Issue(csr, pki.Subject{TenantID: "t1", Kind: pki.KindAgent, ID: "a1"}, now, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	pair, err := tls.X509KeyPair(iss.PEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name     string
		required bool
		state    *tls.ConnectionState
	}{
		{"bearer-only", false, &tls.ConnectionState{}},
		{"client-certificate-cached", true, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{pair.Leaf}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cc := &ClientCertificates{Verifier: ca, Required: bc.required, Now: time.Now}
			h := cc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := CheckRelayCertificate(r.Context(), "a1"); err != nil {
					b.Fatal(err)
				}
			}))
			r := httptest.NewRequest(http.MethodPost, "/api/v1/agents/a1/telemetry/heartbeat", nil)
			r.TLS = bc.state
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r) // the first request verifies the chain; the loop's hit the cache
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}
