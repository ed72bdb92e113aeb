package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
)

// Kinds of certificate subjects.
const (
	KindAgent     = "agent"
	KindCollector = "collector"
)

// Subject is whom a certificate names, in its one URI SAN:
// urn:oneprotect:tenant:<tenant_id>:agent:<agent_id> (or :collector:<collector_id>).
type Subject struct {
	TenantID string
	Kind     string // KindAgent or KindCollector
	ID       string
}

// URI is the subject's URI SAN.
func (s Subject) URI() string {
	return "urn:oneprotect:tenant:" + s.TenantID + ":" + s.Kind + ":" + s.ID
}

// ParseSubjectURI reads a URI SAN written by URI.
func ParseSubjectURI(u string) (Subject, bool) {
	parts := strings.Split(u, ":")
	if len(parts) != 6 || parts[0] != "urn" || parts[1] != "oneprotect" || parts[2] != "tenant" ||
		parts[3] == "" || parts[5] == "" || (parts[4] != KindAgent && parts[4] != KindCollector) {
		return Subject{}, false
	}
	return Subject{TenantID: parts[3], Kind: parts[4], ID: parts[5]}, true
}

// maxCSR bounds the PEM a caller may send (a P-256 or Ed25519 CSR is well under 1 KiB).
const maxCSR = 16 << 10

// CSRError is a refused CSR; its reason is safe to show the caller.
type CSRError struct{ Reason string }

func (e *CSRError) Error() string { return e.Reason }

// ParseCSR reads one PEM CERTIFICATE REQUEST whose key is ECDSA P-256 or Ed25519 and whose
// self-signature holds (the caller owns the key). Everything else in it is ignored: the
// certificate's subject and SANs come from the server.
func ParseCSR(pemText string) (*x509.CertificateRequest, error) {
	if len(pemText) > maxCSR {
		return nil, &CSRError{"csr is too large"}
	}
	block, rest := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, &CSRError{"csr must be one PEM block of type CERTIFICATE REQUEST"}
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, &CSRError{"csr must hold exactly one PEM block"}
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, &CSRError{"csr cannot be parsed as a PKCS #10 certificate request"}
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, &CSRError{"csr key must be ECDSA P-256 or Ed25519"}
		}
	case ed25519.PublicKey:
	default:
		return nil, &CSRError{"csr key must be ECDSA P-256 or Ed25519"}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &CSRError{"csr signature does not verify"}
	}
	return csr, nil
}

// Issued is a signed certificate.
type Issued struct {
	Serial      string
	PEM         []byte
	DER         []byte
	Fingerprint string
	NotBefore   time.Time
	NotAfter    time.Time
	Subject     Subject
}

// clockSkew backdates certificates a little, so a client whose clock is slightly behind
// can use a fresh certificate at once.
const clockSkew = 5 * time.Minute

// Issue signs a client certificate for subj over the CSR's public key, valid from now (less
// clockSkew) for ttl, never past the CA's own expiry. The CSR's subject, SANs and extensions
// are not copied.
func (ca *CA) Issue(csr *x509.CertificateRequest, subj Subject, now time.Time, ttl time.Duration) (*Issued, error) {
	if ttl <= 0 {
		return nil, errors.New("pki: certificate lifetime must be positive")
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(subj.URI())
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl).UTC().Truncate(time.Second)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{CommonName: subj.ID, Organization: []string{"OneProtect tenant " + subj.TenantID},
			OrganizationalUnit: []string{subj.Kind}},
		NotBefore:             now.Add(-clockSkew).UTC().Truncate(time.Second),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return &Issued{Serial: SerialHex(serial), DER: der, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Fingerprint: Fingerprint(der), NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, Subject: subj}, nil
}

// ClientIdentity is what a verified client certificate proves.
type ClientIdentity struct {
	Subject
	Serial   string
	NotAfter time.Time
}

// ErrNotVerified: the certificate is not a valid client certificate of this CA at this time.
var ErrNotVerified = errors.New("pki: the client certificate is not valid for this CA")

// Verify checks a client's certificate chain (leaf first) against this CA at now, for client
// authentication, and reads the identity from its URI SAN.
func (ca *CA) Verify(chain []*x509.Certificate, now time.Time) (*ClientIdentity, error) {
	if len(chain) == 0 {
		return nil, ErrNotVerified
	}
	leaf := chain[0]
	var inter *x509.CertPool
	if len(chain) > 1 {
		inter = x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, ErrNotVerified
	}
	if len(leaf.URIs) != 1 {
		return nil, ErrNotVerified
	}
	subj, ok := ParseSubjectURI(leaf.URIs[0].String())
	if !ok {
		return nil, ErrNotVerified
	}
	return &ClientIdentity{Subject: subj, Serial: SerialHex(leaf.SerialNumber), NotAfter: leaf.NotAfter}, nil
}

// Revoked is one entry of a CRL.
type Revoked struct {
	Serial    string
	RevokedAt time.Time
}

// CRL builds a DER certificate revocation list signed by the CA, valid until next.
func (ca *CA) CRL(entries []Revoked, number int64, now, next time.Time) ([]byte, error) {
	list := make([]x509.RevocationListEntry, 0, len(entries))
	for _, e := range entries {
		n, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			continue
		}
		list = append(list, x509.RevocationListEntry{SerialNumber: n, RevocationTime: e.RevokedAt.UTC()})
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: now.UTC(), NextUpdate: next.UTC(), RevokedCertificateEntries: list,
	}, ca.Cert, ca.key)
}

// NewKeyAndCSR makes an ECDSA P-256 key and a CSR for it (the agent side). The CSR's subject
// is only a hint for people reading it; the server sets the certificate's.
func NewKeyAndCSR(commonName string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
