package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/pki"
)

// Files of the agent's certificate in its state directory. The key never leaves the machine:
// the server only ever sees a CSR for it.
const (
	KeyFile    = "agent.key" // mode 0600
	CertFile   = "agent.crt"
	CACertFile = "agent-ca.crt"
	pendingKey = "agent.key.pending" // a key whose certificate has not arrived yet
)

// certs holds the agent's current client certificate and replaces it on renewal; the TLS
// client asks it for the certificate at every handshake, so a renewal needs no restart.
type certs struct {
	dir string
	mu  sync.RWMutex
	cur *tls.Certificate
	// changed runs after a new certificate is installed: it closes the idle connections,
	// whose handshake presented the previous certificate (or none, at enrollment).
	changed func()
}

// load reads the certificate and key from the state directory, if there are any.
func (c *certs) load() error {
	certPEM, err := os.ReadFile(filepath.Join(c.dir, CertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(c.dir, KeyFile))
	if err != nil {
		return fmt.Errorf("%s exists but its key cannot be read: %w", CertFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%s and %s do not make a key pair (delete both to get a new certificate): %w", CertFile, KeyFile, err)
	}
	c.set(&pair)
	return nil
}

func (c *certs) set(pair *tls.Certificate) {
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0])
	}
	c.mu.Lock()
	c.cur = pair
	changed := c.changed
	c.mu.Unlock()
	if changed != nil {
		changed()
	}
}

func (c *certs) current() *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur
}

// clientCertificate is tls.Config.GetClientCertificate: the current certificate, or none.
func (c *certs) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cur := c.current(); cur != nil {
		return cur, nil
	}
	return &tls.Certificate{}, nil
}

// newCSR makes a fresh key, kept as the pending key (0600) until its certificate arrives.
func (c *certs) newCSR(agentHint string) (csrPEM string, err error) {
	keyPEM, csr, err := pki.NewKeyAndCSR(agentHint)
	if err != nil {
		return "", err
	}
	if err := ensureDir(c.dir); err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(c.dir, pendingKey), keyPEM); err != nil {
		return "", err
	}
	return string(csr), nil
}

// install stores a certificate for the pending key: the key becomes agent.key and the
// certificate agent.crt. Until both are written the previous pair stays in use.
func (c *certs) install(certPEM, caPEM string) error {
	if certPEM == "" {
		return errors.New("the server answered without a certificate (does it run with --agent-ca?)")
	}
	keyPEM, err := os.ReadFile(filepath.Join(c.dir, pendingKey))
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair([]byte(certPEM), keyPEM)
	if err != nil {
		return fmt.Errorf("the server's certificate does not match the key it was asked for: %w", err)
	}
	if caPEM != "" {
		if err := writeFileAtomic(filepath.Join(c.dir, CACertFile), []byte(caPEM)); err != nil {
			return err
		}
	}
	// The certificate is written under a temporary name, then the key and the certificate are
	// renamed into place: a crash in between leaves a pair that load reports and a renewal fixes.
	if err := writeFileAtomic(filepath.Join(c.dir, CertFile+".pending"), []byte(certPEM)); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(c.dir, pendingKey), filepath.Join(c.dir, KeyFile)); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(c.dir, CertFile+".pending"), filepath.Join(c.dir, CertFile)); err != nil {
		return err
	}
	c.set(&pair)
	return nil
}

// renewalDue reports whether the current certificate has used two thirds of its lifetime
// (or there is none).
func (c *certs) renewalDue(now time.Time) bool {
	cur := c.current()
	if cur == nil || cur.Leaf == nil {
		return true
	}
	life := cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore)
	return !now.Before(cur.Leaf.NotBefore.Add(life * 2 / 3))
}

// withClientCertificates returns a client like hc whose TLS handshakes present c's current
// certificate.
func withClientCertificates(hc *http.Client, c *certs) (*http.Client, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, errors.New("mTLS needs an *http.Transport")
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	}
	tr.TLSClientConfig.GetClientCertificate = c.clientCertificate
	c.changed = tr.CloseIdleConnections
	out := *hc
	out.Transport = tr
	return &out, nil
}

// CertificateAnswer is the server's answer to a certificate renewal.
type CertificateAnswer struct {
	Certificate   string    `json:"certificate"`
	CACertificate string    `json:"ca_certificate"`
	ExpiresAt     time.Time `json:"certificate_expires_at"`
}

// RenewCertificate asks for a certificate over a new CSR (the current certificate goes with
// the TLS handshake; the token too, so it works whether or not mTLS is enforced).
func (c *Client) RenewCertificate(ctx context.Context, agentID, token, csr string) (*CertificateAnswer, error) {
	body, err := json.Marshal(map[string]string{"csr": csr})
	if err != nil {
		return nil, err
	}
	var out CertificateAnswer
	if err := c.post(ctx, "/api/v1/agents/"+url.PathEscape(agentID)+"/certificate", token, body, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// renewIfDue renews the certificate once it has used two thirds of its lifetime. A failed
// renewal is logged and tried again before the next heartbeat; meanwhile the current
// certificate, still valid for a third of its lifetime, keeps serving.
func (r *runner) renewIfDue(ctx context.Context, st *State) {
	if r.certs == nil || !r.certs.renewalDue(r.cfg.Now()) {
		return
	}
	csr, err := r.certs.newCSR(st.AgentID)
	if err == nil {
		var ans *CertificateAnswer
		if ans, err = r.client.RenewCertificate(ctx, st.AgentID, st.Token, csr); err == nil {
			err = r.certs.install(ans.Certificate, ans.CACertificate)
			if err == nil {
				r.log.Info("certificate renewed", "agent_id", st.AgentID, "expires_at", ans.ExpiresAt)
				if r.cfg.OnRenewal != nil {
					r.cfg.OnRenewal(nil)
				}
				return
			}
		}
	}
	if ctx.Err() == nil {
		r.log.Warn("certificate renewal failed; the current certificate stays in use and renewal is retried", "agent_id", st.AgentID, "err", err)
		if r.cfg.OnRenewal != nil {
			r.cfg.OnRenewal(err)
		}
	}
}
