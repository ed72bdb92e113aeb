package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"net/http"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/pki"
)

// CertVerifier checks a TLS client's certificate chain (leaf first) at a given time.
type CertVerifier interface {
	Verify(chain []*x509.Certificate, now time.Time) (*pki.ClientIdentity, error)
}

// ClientCertificates attaches the identity of a verified client certificate (agent CA, not
// expired, one URI SAN naming a tenant and an agent or collector) to the request context,
// together with whether the agent endpoints require one. Like the bearer middleware it never
// rejects: the services run the certificate checks, first in their order of checks, through
// CheckAgentCertificate and CheckRelayCertificate. A certificate that does not verify counts
// as none.
type ClientCertificates struct {
	Verifier CertVerifier // nil: no agent CA, so no client certificate is ever valid
	Required bool         // --require-agent-mtls
	Now      func() time.Time
	cache    *expirable.LRU[[sha256.Size]byte, *pki.ClientIdentity]
}

// Verified certificates are remembered by fingerprint so that a keep-alive connection's
// requests cost one signature check, not one each; expiry is re-checked on every hit.
const (
	certCacheSize = 100_000
	certCacheTTL  = 10 * time.Minute
)

type clientCertKey struct{}

type clientCertState struct {
	required bool
	id       *pki.ClientIdentity // nil: no valid certificate
}

// Middleware reads r.TLS.PeerCertificates.
func (c *ClientCertificates) Middleware(next http.Handler) http.Handler {
	if c.cache == nil {
		c.cache = expirable.NewLRU[[sha256.Size]byte, *pki.ClientIdentity](certCacheSize, nil, certCacheTTL)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &clientCertState{required: c.Required}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && c.Verifier != nil {
			st.id = c.verify(r.TLS.PeerCertificates)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientCertKey{}, st)))
	})
}

func (c *ClientCertificates) verify(chain []*x509.Certificate) *pki.ClientIdentity {
	now := c.Now()
	key := sha256.Sum256(chain[0].Raw)
	if id, ok := c.cache.Get(key); ok {
		if now.Before(id.NotAfter) {
			return id
		}
		c.cache.Remove(key)
		return nil
	}
	id, err := c.Verifier.Verify(chain, now)
	if err != nil {
		return nil
	}
	c.cache.Add(key, id)
	return id
}

// ClientCertificate returns the verified client certificate's identity, or nil.
func ClientCertificate(ctx context.Context) *pki.ClientIdentity {
	if st, ok := ctx.Value(clientCertKey{}).(*clientCertState); ok {
		return st.id
	}
	return nil
}

var (
	errCertificateRequired = &domain.Error{Code: domain.CodeClientCertificateRequired,
		Message: "this endpoint requires a valid client certificate from the agent CA (enroll with a CSR to get one)"}
	errCertificateMismatch = &domain.Error{Code: domain.CodeCertificateMismatch,
		Message: "the client certificate names another agent, collector or tenant than this request"}
)

// CheckAgentCertificate is the certificate stage of a request that only the agent itself may
// make (credential rotation, certificate renewal): with --require-agent-mtls a valid
// certificate must be presented; any valid certificate presented must be this agent's, of the
// caller's tenant, and (with a service-account token) the token's own agent.
func CheckAgentCertificate(ctx context.Context, agentID string) error {
	return checkCertificate(ctx, agentID, false)
}

// CheckRelayCertificate is the same stage for heartbeats, which the identity's collector may
// relay: a collector's certificate passes here when the token (if any) is that collector's;
// whether the identity is bound to the collector is the collector_mismatch check that follows.
func CheckRelayCertificate(ctx context.Context, agentID string) error {
	return checkCertificate(ctx, agentID, true)
}

func checkCertificate(ctx context.Context, agentID string, relay bool) error {
	st, ok := ctx.Value(clientCertKey{}).(*clientCertState)
	if !ok {
		return nil // not called over HTTP (in-process callers such as the demo)
	}
	id := st.id
	if id == nil {
		if st.required {
			return errCertificateRequired
		}
		return nil
	}
	p := PrincipalFrom(ctx)
	if p != nil && p.TenantID != id.TenantID {
		return errCertificateMismatch
	}
	switch id.Kind {
	case pki.KindAgent:
		if id.ID != agentID {
			return errCertificateMismatch
		}
		if p != nil && p.Kind == domain.KindServiceAccount && (p.ActorKind != domain.ActorAgent || p.ActorID != id.ID) {
			return errCertificateMismatch
		}
	case pki.KindCollector:
		if !relay {
			return errCertificateMismatch
		}
		if p != nil && p.Kind == domain.KindServiceAccount && (p.ActorKind != domain.ActorCollector || p.ActorID != id.ID) {
			return errCertificateMismatch
		}
	default:
		return errCertificateMismatch
	}
	return nil
}
