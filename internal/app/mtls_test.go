package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/pki"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The TLS and agent-certificate tests: real TLS handshakes against the listener
// configuration `serve` uses, on SQLite and PostgreSQL; heartbeat refusals go through REST
// and GraphQL.

// certAgent is an agent enrolled with a CSR, holding its key and certificate.
type certAgent struct {
	*testenv.Agent
	Cert    tls.Certificate
	Leaf    *x509.Certificate
	CertPEM string
}

func newCSR(t testing.TB) (keyPEM, csrPEM []byte) {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("test agent")
	if err != nil {
		t.Fatal(err)
	}
	return keyPEM, csrPEM
}

func keyPair(t testing.TB, certPEM string, keyPEM []byte) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c, err := tls.X509KeyPair([]byte(certPEM), keyPEM)
	if err != nil {
		t.Fatalf("certificate from the server: %v", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c, leaf
}

// enrollWithCSR enrolls over TLS (no client certificate: enrollment needs none) with a CSR.
func enrollWithCSR(t testing.TB, env *testenv.TLSEnv, enrollToken, hostname string) *certAgent {
	t.Helper()
	keyPEM, csrPEM := newCSR(t)
	r := env.DoWith(env.Client(nil), http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{
		"enrollment_token": enrollToken, "hostname": hostname, "csr": string(csrPEM)})
	if r.Status != http.StatusCreated {
		t.Fatalf("enroll with csr: %d %s", r.Status, r.Body)
	}
	a := &testenv.Agent{ID: r.JSON["agent_id"].(string), AssetID: r.JSON["asset_id"].(string), TenantID: r.JSON["tenant_id"].(string),
		SiteID: r.JSON["site_id"].(string), Token: r.JSON["token"].(string)}
	if c, ok := r.JSON["collector_id"].(string); ok {
		a.CollectorID = &c
	}
	certPEM, _ := r.JSON["certificate"].(string)
	if ca, _ := r.JSON["ca_certificate"].(string); ca != string(env.CA.CertPEM) {
		t.Fatalf("ca_certificate is not the agent CA: %q", ca)
	}
	c, leaf := keyPair(t, certPEM, keyPEM)
	return &certAgent{Agent: a, Cert: c, Leaf: leaf, CertPEM: certPEM}
}

// forge signs a certificate for subj with ca directly, outside any enrollment.
func forge(t testing.TB, ca *pki.CA, subj pki.Subject, now time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	keyPEM, csrPEM := newCSR(t)
	csr, err := pki.ParseCSR(string(csrPEM))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(csr, subj, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := keyPair(t, string(iss.PEM), keyPEM)
	return &c
}

func hbBody() map[string]any {
	return map[string]any{"heartbeat_id": "hb-" + testenv.Unique(), "hostname": "h"}
}

// send posts a heartbeat through REST or GraphQL and returns the status and code. A GraphQL
// error has no status of its own: it is reported with the status REST gives its code, and
// extensions.code is lower-cased, so both transports compare alike.
func send(t *testing.T, env *testenv.TLSEnv, transport string, cert *tls.Certificate, token, agentID string, header ...string) (int, string) {
	t.Helper()
	client := env.Client(cert)
	if transport == "rest" {
		r := env.DoWith(client, http.MethodPost, hbPath(agentID), token, hbBody(), header...)
		return r.Status, r.ErrorCode()
	}
	g := env.GQLWith(client, token, submitMutation, map[string]any{"agentId": agentID,
		"input": map[string]any{"heartbeatId": "hb-" + testenv.Unique(), "hostname": "h"}})
	if len(g.Errors) == 0 {
		return http.StatusOK, ""
	}
	code := strings.ToLower(g.Code())
	return restStatus[code], code
}

var restStatus = map[string]int{"client_certificate_required": 401, "unauthenticated": 401, "unknown_agent": 401,
	"certificate_mismatch": 403, "actor_mismatch": 403, "collector_mismatch": 403, "agent_revoked": 403, "agent_stale": 403,
	"service_account_required": 403}

// mtlsFleet is a tenant with two agents enrolled with CSRs, a collector with an agent bound
// to it, and a second tenant with its own agent, all over TLS with an agent CA.
type mtlsFleet struct {
	env             *testenv.TLSEnv
	tenant          *testenv.Tenant
	a, b            *certAgent
	collectorID     string
	collectorToken  string
	collectorCert   tls.Certificate
	relayed         *certAgent
	other           *certAgent // another tenant's
	otherCA         *pki.CA
	enrollmentToken string
}

func newMTLSFleet(t *testing.T, dsn string, opts ...testenv.Option) *mtlsFleet {
	env := testenv.NewTLS(t, dsn, opts...)
	f := &mtlsFleet{env: env, tenant: env.Tenant("mtls")}
	site := env.Site(f.tenant, "HQ")
	f.enrollmentToken = env.EnrollmentToken(f.tenant, site, nil, 10)
	f.a = enrollWithCSR(t, env, f.enrollmentToken, "a")
	f.b = enrollWithCSR(t, env, f.enrollmentToken, "b")
	f.collectorID, f.collectorToken = env.Collector(f.tenant, site, "relay")
	f.relayed = enrollWithCSR(t, env, env.EnrollmentToken(f.tenant, site, &f.collectorID, 1), "behind-collector")
	keyPEM, csrPEM := newCSR(t)
	r := env.DoWith(env.Client(nil), http.MethodPost, "/api/v1/collectors/"+f.collectorID+"/certificate", f.collectorToken,
		map[string]any{"csr": string(csrPEM)})
	if r.Status != http.StatusOK {
		t.Fatalf("collector certificate: %d %s", r.Status, r.Body)
	}
	f.collectorCert, _ = keyPair(t, r.JSON["certificate"].(string), keyPEM)
	t2 := env.Tenant("other")
	f.other = enrollWithCSR(t, env, env.EnrollmentToken(t2, env.Site(t2, "HQ"), nil, 1), "other")
	var err error
	if f.otherCA, err = pki.Init(filepath.Join(t.TempDir(), "other-ca"), "another CA", time.Now()); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMTLSHeartbeatChecks(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS)
		env := f.env
		now := env.Clock.Now()
		cases := []struct {
			name    string
			cert    func() *tls.Certificate
			token   func() string
			agentID func() string
			header  []string
			status  int
			code    string
		}{
			{name: "own certificate and token", cert: func() *tls.Certificate { return &f.a.Cert }, status: 200},
			{name: "no certificate", cert: func() *tls.Certificate { return nil }, status: 401, code: "client_certificate_required"},
			{name: "no certificate, no token: the certificate is checked first", cert: func() *tls.Certificate { return nil },
				token: func() string { return "" }, status: 401, code: "client_certificate_required"},
			{name: "another CA's certificate for this very agent", cert: func() *tls.Certificate {
				return forge(t, f.otherCA, pki.Subject{TenantID: f.a.TenantID, Kind: pki.KindAgent, ID: f.a.ID}, now, time.Hour)
			}, status: 401, code: "client_certificate_required"},
			{name: "expired certificate", cert: func() *tls.Certificate {
				return forge(t, env.CA, pki.Subject{TenantID: f.a.TenantID, Kind: pki.KindAgent, ID: f.a.ID}, now.Add(-2*time.Hour), time.Hour)
			}, status: 401, code: "client_certificate_required"},
			{name: "another agent's certificate", cert: func() *tls.Certificate { return &f.b.Cert },
				status: 403, code: "certificate_mismatch"},
			{name: "another agent's certificate with that agent's token", cert: func() *tls.Certificate { return &f.b.Cert },
				token: func() string { return f.b.Token }, status: 403, code: "certificate_mismatch"},
			{name: "another tenant's certificate", cert: func() *tls.Certificate { return &f.other.Cert },
				status: 403, code: "certificate_mismatch"},
			{name: "a certificate naming this agent id in another tenant", cert: func() *tls.Certificate {
				return forge(t, env.CA, pki.Subject{TenantID: f.other.TenantID, Kind: pki.KindAgent, ID: f.a.ID}, now, time.Hour)
			}, status: 403, code: "certificate_mismatch"},
			{name: "a mismatched certificate ranks before a wrong media type", cert: func() *tls.Certificate { return &f.b.Cert },
				header: []string{"Content-Type", "text/plain"}, status: 403, code: "certificate_mismatch"},
			{name: "own certificate without a token: the token is still needed", cert: func() *tls.Certificate { return &f.a.Cert },
				token: func() string { return "" }, status: 401, code: "unauthenticated"},
			{name: "collector relaying with its certificate and token", cert: func() *tls.Certificate { return &f.collectorCert },
				token: func() string { return f.collectorToken }, agentID: func() string { return f.relayed.ID }, status: 200},
			{name: "collector certificate for an agent not bound to it", cert: func() *tls.Certificate { return &f.collectorCert },
				token: func() string { return f.collectorToken }, status: 403, code: "collector_mismatch"},
			{name: "collector certificate with the agent's own token", cert: func() *tls.Certificate { return &f.collectorCert },
				token: func() string { return f.relayed.Token }, agentID: func() string { return f.relayed.ID },
				status: 403, code: "certificate_mismatch"},
			{name: "collector token with the relayed agent's own certificate", cert: func() *tls.Certificate { return &f.relayed.Cert },
				token: func() string { return f.collectorToken }, agentID: func() string { return f.relayed.ID },
				status: 403, code: "certificate_mismatch"},
		}
		for _, transport := range []string{"rest", "graphql"} {
			for _, tc := range cases {
				if tc.header != nil && transport == "graphql" {
					continue // a REST media-type case
				}
				t.Run(transport+"/"+tc.name, func(t *testing.T) {
					token, agentID := f.a.Token, f.a.ID
					if tc.token != nil {
						token = tc.token()
					}
					if tc.agentID != nil {
						agentID = tc.agentID()
					}
					status, code := send(t, env, transport, tc.cert(), token, agentID, tc.header...)
					if status != tc.status || code != tc.code {
						t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
					}
				})
			}
		}
	})
}

// An expired certificate: the same certificate that worked is refused once the clock passes
// its end (the service's clock, so no waiting).
func TestMTLSExpiredCertificate(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS)
		if status, code := send(t, f.env, "rest", &f.a.Cert, f.a.Token, f.a.ID); status != 200 {
			t.Fatalf("before expiry: %d %s", status, code)
		}
		f.env.Clock.Advance(f.a.Leaf.NotAfter.Sub(f.env.Clock.Now()) + time.Second)
		for _, tr := range []string{"rest", "graphql"} {
			if status, code := send(t, f.env, tr, &f.a.Cert, f.a.Token, f.a.ID); status != 401 || code != "client_certificate_required" {
				t.Fatalf("%s after expiry: %d %q", tr, status, code)
			}
		}
	})
}

// A revoked identity's certificate is refused on the very next request, heartbeat and renewal
// alike, and its serial appears on the CRL; a superseded one the same.
func TestMTLSRevokedIdentity(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS)
		env := f.env
		for _, tr := range []string{"rest", "graphql"} {
			if status, code := send(t, env, tr, &f.a.Cert, f.a.Token, f.a.ID); status != 200 {
				t.Fatalf("%s before revocation: %d %s", tr, status, code)
			}
		}
		env.MustGQL(f.tenant.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": f.a.ID})
		for _, tr := range []string{"rest", "graphql"} {
			if status, code := send(t, env, tr, &f.a.Cert, f.a.Token, f.a.ID); status != 403 || code != "agent_revoked" {
				t.Fatalf("%s after revocation: %d %q", tr, status, code)
			}
		}
		_, csrPEM := newCSR(t)
		r := env.DoWith(env.Client(&f.a.Cert), http.MethodPost, certPath(f.a.ID), "", map[string]any{"csr": string(csrPEM)})
		if r.Status != 403 || r.ErrorCode() != "agent_revoked" {
			t.Fatalf("renewal after revocation: %d %s", r.Status, r.Body)
		}
		if !crlHas(t, env, f.a.Leaf.SerialNumber) || crlHas(t, env, f.b.Leaf.SerialNumber) {
			t.Fatalf("the CRL should list the revoked agent's certificate and only that one")
		}
	})
}

func TestMTLSStaleIdentity(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS, func(c *app.Config) { c.StaleAfter = time.Hour })
		env := f.env
		if status, code := send(t, env, "rest", &f.a.Cert, f.a.Token, f.a.ID); status != 200 {
			t.Fatalf("before: %d %s", status, code)
		}
		env.Clock.Advance(2 * time.Hour)
		if _, err := env.App.Enrollment.Sweep(context.Background(), time.Hour); err != nil {
			t.Fatal(err)
		}
		for _, tr := range []string{"rest", "graphql"} {
			if status, code := send(t, env, tr, &f.a.Cert, f.a.Token, f.a.ID); status != 403 || code != "agent_stale" {
				t.Fatalf("%s when stale: %d %q", tr, status, code)
			}
		}
		if crlHas(t, env, f.a.Leaf.SerialNumber) {
			t.Fatal("a STALE identity's certificate is not revoked for good: it must not be on the CRL")
		}
	})
}

func certPath(agentID string) string {
	return "/api/v1/agents/" + url.PathEscape(agentID) + "/certificate"
}

func crlHas(t *testing.T, env *testenv.TLSEnv, serial interface{ String() string }) bool {
	t.Helper()
	r := env.DoWith(env.Client(nil), http.MethodGet, "/api/v1/agent-ca/crl", "", nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("crl: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	crl, err := x509.ParseRevocationList(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(env.CA.Cert); err != nil {
		t.Fatalf("the CRL is not signed by the agent CA: %v", err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.String() == serial.String() {
			return true
		}
	}
	return false
}

// Renewal: authenticated by the current certificate alone (or the token), it returns a new
// certificate for a new key that works at once; the old one keeps working until it expires;
// both serials are recorded with the identity.
func TestMTLSRenewal(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS)
		env := f.env
		keyPEM, csrPEM := newCSR(t)
		r := env.DoWith(env.Client(&f.a.Cert), http.MethodPost, certPath(f.a.ID), "", map[string]any{"csr": string(csrPEM)})
		if r.Status != 200 {
			t.Fatalf("renewal with the certificate alone: %d %s", r.Status, r.Body)
		}
		renewed, leaf := keyPair(t, r.JSON["certificate"].(string), keyPEM)
		if leaf.SerialNumber.Cmp(f.a.Leaf.SerialNumber) == 0 {
			t.Fatal("a renewal must carry a new serial")
		}
		if got := leaf.URIs[0].String(); got != "urn:oneprotect:tenant:"+f.a.TenantID+":agent:"+f.a.ID {
			t.Fatalf("renewed SAN %s", got)
		}
		for _, c := range []*tls.Certificate{&renewed, &f.a.Cert} {
			if status, code := send(t, env, "rest", c, f.a.Token, f.a.ID); status != 200 {
				t.Fatalf("heartbeat after renewal: %d %s", status, code)
			}
		}
		// With the token and the certificate, too; without a certificate it is refused
		// (--require-agent-mtls covers the certificate endpoint).
		_, csr2 := newCSR(t)
		if r := env.DoWith(env.Client(&renewed), http.MethodPost, certPath(f.a.ID), f.a.Token, map[string]any{"csr": string(csr2)}); r.Status != 200 {
			t.Fatalf("renewal with token and certificate: %d %s", r.Status, r.Body)
		}
		if r := env.DoWith(env.Client(nil), http.MethodPost, certPath(f.a.ID), f.a.Token, map[string]any{"csr": string(csr2)}); r.Status != 401 || r.ErrorCode() != "client_certificate_required" {
			t.Fatalf("renewal without a certificate: %d %s", r.Status, r.Body)
		}
		// Another agent's certificate or token cannot renew this one.
		if r := env.DoWith(env.Client(&f.b.Cert), http.MethodPost, certPath(f.a.ID), "", map[string]any{"csr": string(csr2)}); r.Status != 403 || r.ErrorCode() != "certificate_mismatch" {
			t.Fatalf("renewal with another agent's certificate: %d %s", r.Status, r.Body)
		}
		if r := env.DoWith(env.Client(&f.a.Cert), http.MethodPost, certPath(f.a.ID), f.b.Token, map[string]any{"csr": string(csr2)}); r.Status != 403 || r.ErrorCode() != "certificate_mismatch" {
			t.Fatalf("renewal with another agent's token: %d %s", r.Status, r.Body)
		}
		if r := env.DoWith(env.Client(&f.collectorCert), http.MethodPost, certPath(f.relayed.ID), f.collectorToken, map[string]any{"csr": string(csr2)}); r.Status != 403 || r.ErrorCode() != "certificate_mismatch" {
			t.Fatalf("renewal by the collector: %d %s", r.Status, r.Body)
		}
		certs, err := env.App.Store.Certificates(context.Background(), f.a.TenantID, domain.ActorAgent, f.a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 3 {
			t.Fatalf("want 3 recorded certificates (enrollment and two renewals), got %d", len(certs))
		}
		reasons := map[string]int{}
		for _, c := range certs {
			reasons[c.Reason]++
		}
		if reasons[domain.CertIssuedAtEnrollment] != 1 || reasons[domain.CertIssuedAtRenewal] != 2 {
			t.Fatalf("recorded reasons %v", reasons)
		}
	})
}

// Without --require-agent-mtls a certificate is optional, but one that is presented must
// still match; the token renews alone.
func TestMTLSOptional(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn)
		env := f.env
		for _, tr := range []string{"rest", "graphql"} {
			if status, code := send(t, env, tr, nil, f.a.Token, f.a.ID); status != 200 {
				t.Fatalf("%s without a certificate: %d %s", tr, status, code)
			}
			if status, code := send(t, env, tr, &f.b.Cert, f.a.Token, f.a.ID); status != 403 || code != "certificate_mismatch" {
				t.Fatalf("%s with another agent's certificate: %d %q", tr, status, code)
			}
		}
		_, csrPEM := newCSR(t)
		if r := env.DoWith(env.Client(nil), http.MethodPost, certPath(f.a.ID), f.a.Token, map[string]any{"csr": string(csrPEM)}); r.Status != 200 {
			t.Fatalf("renewal with the token alone: %d %s", r.Status, r.Body)
		}
		if r := env.DoWith(env.Client(nil), http.MethodPost, certPath(f.a.ID), "", map[string]any{"csr": string(csrPEM)}); r.Status != 401 || r.ErrorCode() != "unauthenticated" {
			t.Fatalf("renewal with neither: %d %s", r.Status, r.Body)
		}
	})
}

// The server sets subject and SANs: a CSR asking for another agent's URI SAN, another
// tenant, DNS names, IP addresses and e-mail gets none of it.
func TestMTLSCSRCannotChooseItsIdentity(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.NewTLS(t, dsn, testenv.RequireMTLS)
		fl := env.NewFleet("san") // a plain agent whose identity the CSR tries to take
		tok := env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 1)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		victim, _ := url.Parse("urn:oneprotect:tenant:" + fl.Agent.TenantID + ":agent:" + fl.Agent.ID)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: fl.Agent.ID, Organization: []string{"evil"}}, URIs: []*url.URL{victim},
			DNSNames: []string{"server.example"}, EmailAddresses: []string{"x@example.com"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		r := env.DoWith(env.Client(nil), http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{
			"enrollment_token": tok, "hostname": "thief", "csr": string(csrPEM)})
		if r.Status != 201 {
			t.Fatalf("enroll: %d %s", r.Status, r.Body)
		}
		block, _ := pem.Decode([]byte(r.JSON["certificate"].(string)))
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		newID := r.JSON["agent_id"].(string)
		want := "urn:oneprotect:tenant:" + fl.Agent.TenantID + ":agent:" + newID
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want || len(leaf.DNSNames) != 0 || len(leaf.EmailAddresses) != 0 ||
			len(leaf.IPAddresses) != 0 || leaf.Subject.CommonName != newID {
			t.Fatalf("the certificate took the CSR's names: URIs %v DNS %v email %v CN %q", leaf.URIs, leaf.DNSNames, leaf.EmailAddresses, leaf.Subject.CommonName)
		}
		if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || leaf.IsCA {
			t.Fatalf("the certificate must be a client certificate and nothing else")
		}
		// And with it, the victim's heartbeats are refused.
		c, _ := keyPairFromKey(t, r.JSON["certificate"].(string), key)
		if status, code := send(t, env, "rest", &c, fl.Agent.Token, fl.Agent.ID); status != 403 || code != "certificate_mismatch" {
			t.Fatalf("the thief's certificate on the victim's heartbeat: %d %q", status, code)
		}
	})
}

func keyPairFromKey(t testing.TB, certPEM string, key *ecdsa.PrivateKey) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// A csr that is not a P-256 or Ed25519 PKCS #10 request is 400 invalid_request naming csr,
// and nothing is written (the enrollment token keeps its use).
func TestMTLSBadCSR(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.NewTLS(t, dsn)
		tn := env.Tenant("csr")
		tok := env.EnrollmentToken(tn, env.Site(tn, "HQ"), nil, 1)
		csrOf := func(key any) string {
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
			if err != nil {
				t.Fatal(err)
			}
			return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		}
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		good := csrOf(mustP256(t))
		tampered := []byte(good)
		tampered[len(tampered)/2] ^= 1
		cases := map[string]any{
			"rsa key":         csrOf(rsaKey),
			"P-384 key":       csrOf(p384),
			"not PEM":         "hello",
			"a certificate":   string(env.CA.CertPEM),
			"two blocks":      good + good,
			"tampered":        string(tampered),
			"empty":           "",
			"not a string":    42,
			"private key PEM": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		}
		for name, csr := range cases {
			r := env.DoWith(env.Client(nil), http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": tok, "csr": csr})
			if r.Status != 400 || r.ErrorCode() != "invalid_request" || r.JSON["error"].(map[string]any)["field"] != "csr" {
				t.Fatalf("%s: %d %s", name, r.Status, r.Body)
			}
		}
		// Ed25519 is accepted, and the token's single use was still there.
		_, edKey, _ := ed25519GenerateKey()
		r := env.DoWith(env.Client(nil), http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": tok, "csr": csrOf(edKey)})
		if r.Status != 201 || r.JSON["certificate"] == nil {
			t.Fatalf("ed25519 csr: %d %s", r.Status, r.Body)
		}
	})
}

func mustP256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The listener: TLS 1.2 and 1.3 only, HTTP/2 and HTTP/1.1 both served.
func TestTLSListener(t *testing.T) {
	env := testenv.NewTLS(t, testenv.NewSQLite(t))
	addr := strings.TrimPrefix(env.Server.URL, "https://")
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: env.Roots, MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Fatalf("TLS version %x was accepted", v)
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: env.Roots, MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("TLS version %x refused: %v", v, err)
		}
		conn.Close()
	}
	// TLS 1.2 with a CBC suite only: refused.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: env.Roots, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
	if err == nil {
		conn.Close()
		t.Fatal("a CBC cipher suite was accepted")
	}
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.Roots}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		resp, err := (&http.Client{Transport: tr}).Get(env.Server.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != want || resp.StatusCode != 200 {
			t.Fatalf("want HTTP/%d 200, got %s %d", want, resp.Proto, resp.StatusCode)
		}
	}
	// The CA's certificate is served for agents and tools that want it.
	r := env.DoWith(env.Client(nil), http.MethodGet, "/api/v1/agent-ca/certificate", "", nil)
	if r.Status != 200 || string(r.Body) != string(env.CA.CertPEM) {
		t.Fatalf("agent CA certificate: %d", r.Status)
	}
}

func ed25519GenerateKey() (any, any, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	return pub, priv, err
}

// Credential rotation is one of the endpoints --require-agent-mtls covers: this agent's own
// certificate, or a refusal before anything else is checked.
func TestMTLSCredentialRotation(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		f := newMTLSFleet(t, dsn, testenv.RequireMTLS)
		env := f.env
		path := "/api/v1/agents/" + f.a.ID + "/credentials/rotate"
		for _, tc := range []struct {
			name   string
			cert   *tls.Certificate
			token  string
			status int
			code   string
		}{
			{"no certificate", nil, f.a.Token, 401, "client_certificate_required"},
			{"no certificate, no token", nil, "", 401, "client_certificate_required"},
			{"another agent's certificate", &f.b.Cert, f.a.Token, 403, "certificate_mismatch"},
			{"another tenant's certificate", &f.other.Cert, f.a.Token, 403, "certificate_mismatch"},
			{"the collector's certificate", &f.collectorCert, f.a.Token, 403, "certificate_mismatch"},
			{"own certificate", &f.a.Cert, f.a.Token, 200, ""},
		} {
			r := env.DoWith(env.Client(tc.cert), http.MethodPost, path, tc.token, nil)
			if r.Status != tc.status || r.ErrorCode() != tc.code {
				t.Fatalf("%s: %d %s", tc.name, r.Status, r.Body)
			}
		}
	})
}
