package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/pki"
)

// DefaultAgentCertTTL is the default lifetime of agent certificates (--agent-cert-ttl): 30
// days, renewed by the agent after 20. Short enough that a certificate copied off a machine is
// soon useless, long enough that an agent offline for a while (up to --stale-after) still
// comes back with a valid one.
const DefaultAgentCertTTL = 30 * 24 * time.Hour

// openCA loads the agent CA (--agent-ca) and sets up the client-certificate middleware.
func (a *App) openCA() error {
	cfg := a.Config
	if cfg.RequireAgentMTLS && cfg.AgentCADir == "" {
		return errors.New("--require-agent-mtls needs --agent-ca (create one with: oneprotect ca init --dir DIR)")
	}
	if cfg.AgentCertTTL <= 0 {
		return errors.New("--agent-cert-ttl must be positive")
	}
	a.ClientCerts = &auth.ClientCertificates{Required: cfg.RequireAgentMTLS, Now: cfg.Now}
	if cfg.AgentCADir == "" {
		return nil
	}
	ca, err := pki.Load(cfg.AgentCADir)
	if err != nil {
		return fmt.Errorf("--agent-ca: %w", err)
	}
	if !cfg.Now().Before(ca.Cert.NotAfter) {
		return fmt.Errorf("--agent-ca: the CA certificate expired on %s", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	a.CA = ca
	a.ClientCerts.Verifier = ca
	return nil
}
