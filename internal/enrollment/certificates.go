package enrollment

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/pki"
	"github.com/oneprotect/telemetry/internal/store"
)

// Issued is a signed certificate as the API returns it.
type Issued struct {
	*pki.Issued
	CACertificate []byte
}

var (
	errNoCA              = domain.Invalid("csr", "this server signs no certificates (it runs without --agent-ca); send no csr")
	errRenewUnknownAgent = &domain.Error{Code: domain.CodeUnknownAgent,
		Message: "no agent identity with this agent_id; enroll again"}
	errRenewActorMismatch = &domain.Error{Code: domain.CodeActorMismatch,
		Message: "only the agent itself may renew its certificate"}
	errRenewStale = &domain.Error{Code: domain.CodeAgentStale,
		Message: "the agent identity is stale; an administrator must reactivate it"}
)

// parseCSR checks an optional CSR: nil when absent, INVALID_REQUEST (field csr) when it is not
// one PEM PKCS #10 request with an ECDSA P-256 or Ed25519 key and a valid self-signature.
func (s *Service) parseCSR(csr *string) (*x509.CertificateRequest, error) {
	if csr == nil {
		return nil, nil
	}
	if s.CA == nil {
		return nil, errNoCA
	}
	req, err := pki.ParseCSR(*csr)
	if err != nil {
		var ce *pki.CSRError
		if errors.As(err, &ce) {
			return nil, domain.Invalid("csr", "%s", ce.Reason)
		}
		return nil, err
	}
	return req, nil
}

// issue signs a certificate for subj; the caller records it.
func (s *Service) issue(csr *x509.CertificateRequest, subj pki.Subject, reason string) (*Issued, *domain.Certificate, error) {
	now := s.Now()
	c, err := s.CA.Issue(csr, subj, now, s.CertTTL)
	if err != nil {
		return nil, nil, err
	}
	rec := &domain.Certificate{Serial: c.Serial, TenantID: subj.TenantID, SubjectKind: domain.ActorKind(subj.Kind),
		SubjectID: subj.ID, Fingerprint: c.Fingerprint, NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: now, Reason: reason}
	return &Issued{Issued: c, CACertificate: s.CA.CertPEM}, rec, nil
}

// RenewalCaller runs the checks of a certificate renewal that come before its body, in the
// order of checks: the certificate stage, then the caller. The agent authenticates with its
// current certificate or with its token; it returns the tenant the agent is looked up in.
func (s *Service) RenewalCaller(ctx context.Context, agentID string) (tenantID string, err error) {
	if err := auth.CheckAgentCertificate(ctx, agentID); err != nil {
		return "", err
	}
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		if err := auth.FailedAuthentication(ctx); err != nil {
			return "", err
		}
		if c := auth.ClientCertificate(ctx); c != nil {
			return c.TenantID, nil // the certificate check above made sure it is this agent's
		}
		return "", domain.ErrUnauthenticated
	}
	if p.Kind != domain.KindServiceAccount {
		return "", &domain.Error{Code: domain.CodeServiceAccountRequired, Message: "only the agent's own service account may renew its certificate"}
	}
	if p.ActorKind != domain.ActorAgent || p.ActorID != agentID {
		return "", errRenewActorMismatch
	}
	return p.TenantID, nil
}

// RenewCertificate signs a new certificate for the agent over the CSR's key, while the
// identity may still send heartbeats (ENROLLED or ACTIVE, read afresh: a revoked identity's
// certificate or token gets AGENT_REVOKED at once). The previous certificate stays valid until
// it expires, so an agent that never received the answer keeps working and simply renews again.
func (s *Service) RenewCertificate(ctx context.Context, agentID string, csrPEM *string) (*Issued, error) {
	tenantID, err := s.RenewalCaller(ctx, agentID)
	if err != nil {
		return nil, err
	}
	if csrPEM == nil {
		if s.CA == nil {
			return nil, errNoCA
		}
		return nil, domain.Invalid("csr", "csr is required")
	}
	csr, err := s.parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(agentID) {
		return nil, errRenewUnknownAgent
	}
	id, err := s.Store.AgentIdentity(ctx, tenantID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errRenewUnknownAgent
	}
	if err != nil {
		return nil, err
	}
	switch id.Status {
	case domain.StatusRevoked:
		return nil, errRevoked
	case domain.StatusStale:
		return nil, errRenewStale
	}
	out, rec, err := s.issue(csr, pki.Subject{TenantID: id.TenantID, Kind: pki.KindAgent, ID: id.AgentID}, domain.CertIssuedAtRenewal)
	if err != nil {
		return nil, err
	}
	if err := s.Store.RecordCertificate(ctx, rec); err != nil {
		return nil, err
	}
	return out, nil
}

// CollectorCaller runs the checks of a collector's certificate request that come before its
// body: the collector's own service-account token (its bootstrap credential, as an enrollment
// token is an agent's), and any valid certificate presented must be this collector's.
func (s *Service) CollectorCaller(ctx context.Context, collectorID string) (*domain.Principal, error) {
	if c := auth.ClientCertificate(ctx); c != nil {
		p := auth.PrincipalFrom(ctx)
		if c.Kind != pki.KindCollector || c.ID != collectorID || (p != nil && p.TenantID != c.TenantID) {
			return nil, &domain.Error{Code: domain.CodeCertificateMismatch,
				Message: "the client certificate names another collector or tenant than this request"}
		}
	}
	p, err := auth.RequireServiceAccount(ctx)
	if err != nil {
		return nil, err
	}
	if p.ActorKind != domain.ActorCollector || p.ActorID != collectorID {
		return nil, &domain.Error{Code: domain.CodeActorMismatch, Message: "only the collector itself may request its certificate"}
	}
	return p, nil
}

// CollectorCertificate signs a certificate naming the calling collector, with which it may
// relay the heartbeats of the agents bound to it.
func (s *Service) CollectorCertificate(ctx context.Context, collectorID string, csrPEM *string) (*Issued, error) {
	p, err := s.CollectorCaller(ctx, collectorID)
	if err != nil {
		return nil, err
	}
	if csrPEM == nil {
		if s.CA == nil {
			return nil, errNoCA
		}
		return nil, domain.Invalid("csr", "csr is required")
	}
	csr, err := s.parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	out, rec, err := s.issue(csr, pki.Subject{TenantID: p.TenantID, Kind: pki.KindCollector, ID: collectorID}, domain.CertIssuedToCollector)
	if err != nil {
		return nil, err
	}
	if err := s.Store.RecordCertificate(ctx, rec); err != nil {
		return nil, err
	}
	return out, nil
}

// CACertificate is the agent CA's certificate (PEM), NOT_FOUND without one.
func (s *Service) CACertificate() ([]byte, error) {
	if s.CA == nil {
		return nil, domain.NotFound("agent CA")
	}
	return s.CA.CertPEM, nil
}

// crlLifetime is how long a CRL is served from memory and how long it says it is valid.
// Nothing depends on it being fresher: every request checks the identity's status itself.
const crlLifetime = time.Minute

// maxCRLEntries bounds one CRL; only unexpired certificates of revoked identities are listed,
// and certificate lifetimes are short, so a fleet stays far below it.
const maxCRLEntries = 100_000

// CRL returns the agent CA's certificate revocation list (DER): the unexpired certificates
// of REVOKED identities (revoked by an administrator or superseded by a re-enrollment). A
// STALE identity's certificates are not listed, since an administrator may reactivate it; the
// service refuses them per request all the same.
func (s *Service) CRL(ctx context.Context) ([]byte, error) {
	if s.CA == nil {
		return nil, domain.NotFound("agent CA")
	}
	now := s.Now()
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	if s.crl != nil && now.Before(s.crlUntil) {
		return s.crl, nil
	}
	revoked, err := s.Store.RevokedCertificates(ctx, now, maxCRLEntries)
	if err != nil {
		return nil, err
	}
	entries := make([]pki.Revoked, len(revoked))
	for i, r := range revoked {
		entries[i] = pki.Revoked{Serial: r.Serial, RevokedAt: r.RevokedAt}
	}
	// The CRL number must grow; unix seconds do, across restarts and replicas alike.
	der, err := s.CA.CRL(entries, now.Unix(), now, now.Add(2*crlLifetime))
	if err != nil {
		return nil, err
	}
	s.crl, s.crlUntil = der, now.Add(crlLifetime)
	return der, nil
}
