package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/pki"
)

// tlsFlags are serve's TLS and agent-certificate flags.
type tlsFlags struct {
	cert, key     *string
	selfSigned    *bool
	agentCA       *string
	agentCertTTL  *time.Duration
	requireMTLS   *bool
	enabled       bool
	serverCerts   []tls.Certificate
	selfSignedFpr string
}

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	return &tlsFlags{
		cert:         fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM; the chain may follow the leaf)"),
		key:          fs.String("tls-key", "", "the private key of --tls-cert (PEM)"),
		selfSigned:   fs.Bool("tls-self-signed", false, "serve HTTPS with a certificate made at start for the listen address (demos, tests); prints its SHA-256 fingerprint"),
		agentCA:      fs.String("agent-ca", "", "directory of the agent CA (from `oneprotect ca init`): sign agent certificates from enrollment CSRs"),
		agentCertTTL: fs.Duration("agent-cert-ttl", app.DefaultAgentCertTTL, "lifetime of the agent certificates it signs (agents renew after two thirds)"),
		requireMTLS:  fs.Bool("require-agent-mtls", false, "heartbeat, credential and certificate endpoints require a client certificate from the agent CA"),
	}
}

// apply checks the flags and copies them into the service's configuration.
func (f *tlsFlags) apply(cfg *app.Config, demo bool) error {
	switch {
	case *f.selfSigned && (*f.cert != "" || *f.key != ""):
		return errors.New("--tls-self-signed and --tls-cert/--tls-key exclude each other")
	case (*f.cert == "") != (*f.key == ""):
		return errors.New("--tls-cert and --tls-key go together")
	}
	f.enabled = *f.selfSigned || *f.cert != ""
	if *f.requireMTLS && !f.enabled {
		return errors.New("--require-agent-mtls needs TLS on this listener (--tls-cert/--tls-key or --tls-self-signed); " +
			"a load balancer in front must pass TLS through, not end it")
	}
	if demo && f.enabled {
		return errors.New("--demo runs its simulated agents over plain HTTP: leave out the TLS flags")
	}
	if *f.cert != "" {
		c, err := tls.LoadX509KeyPair(*f.cert, *f.key)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		f.serverCerts = []tls.Certificate{c}
	}
	if *f.agentCA != "" {
		// Checked here too, so that a CA problem is reported as one (not as a database error).
		if _, err := pki.Load(*f.agentCA); err != nil {
			return fmt.Errorf("--agent-ca: %w", err)
		}
		cfg.AgentCADir = filepath.Clean(*f.agentCA)
	} else if *f.requireMTLS {
		return errors.New("--require-agent-mtls needs --agent-ca (create one with: oneprotect ca init --dir DIR)")
	}
	cfg.AgentCertTTL, cfg.RequireAgentMTLS = *f.agentCertTTL, *f.requireMTLS
	return nil
}

// listen wraps the listener in TLS when enabled and returns how to serve on it and the base
// URL. A self-signed certificate is made for the address's host, and its fingerprint printed.
func (f *tlsFlags) listen(srv *http.Server, ln net.Listener, a *app.App, log *slog.Logger, stderr io.Writer) (serveFn func() error, scheme string, err error) {
	if !f.enabled {
		return func() error { return srv.Serve(ln) }, "http", nil
	}
	if *f.selfSigned {
		host, _, _ := net.SplitHostPort(ln.Addr().String())
		c, fpr, err := pki.SelfSigned(host, time.Now())
		if err != nil {
			return nil, "", err
		}
		f.serverCerts, f.selfSignedFpr = []tls.Certificate{c}, fpr
		fmt.Fprintf(stderr, "TLS: self-signed certificate for %s, SHA-256 fingerprint %s\n", ln.Addr(), fpr)
	}
	cfg := pki.ServerConfig(f.serverCerts, nil)
	if a.CA != nil {
		cfg = pki.ServerConfig(f.serverCerts, a.CA.Pool())
	}
	srv.TLSConfig = cfg
	log.Info("TLS enabled", "min_version", "1.2", "agent_ca", a.CA != nil, "require_agent_mtls", *f.requireMTLS)
	// ServeTLS (not Serve on a TLS listener) is what turns HTTP/2 on beside HTTP/1.1.
	return func() error { return srv.ServeTLS(ln, "", "") }, "https", nil
}

// caCommand is `oneprotect ca init`.
func caCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return errors.New("usage: oneprotect ca init --dir DIR [--import-cert FILE --import-key FILE] [--json]")
	}
	fs := newFlags("ca init")
	dir := fs.String("dir", "", "directory for ca.crt and ca.key (required; created 0700)")
	name := fs.String("name", "OneProtect agent CA", "the new CA's common name")
	importCert := fs.String("import-cert", "", "import this existing CA certificate (PEM) instead of creating a CA")
	importKey := fs.String("import-key", "", "the private key of --import-cert (PEM: PKCS #8, SEC 1 or PKCS #1)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if (*importCert == "") != (*importKey == "") {
		return errors.New("--import-cert and --import-key go together")
	}
	var ca *pki.CA
	var err error
	if *importCert != "" {
		ca, err = pki.Import(*dir, *importCert, *importKey)
	} else {
		ca, err = pki.Init(*dir, *name, time.Now())
	}
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(*dir, pki.CertFile), filepath.Join(*dir, pki.KeyFile)
	if *asJSON {
		return printJSON(stdout, map[string]any{"certificate": certPath, "key": keyPath, "subject": ca.Cert.Subject.String(),
			"fingerprint_sha256": ca.Fingerprint(), "not_after": ca.Cert.NotAfter.UTC().Format(time.RFC3339)})
	}
	fmt.Fprintf(stdout, "agent CA %q ready:\n  certificate %s\n  key         %s (mode 0600; keep it secret)\n  SHA-256     %s\n  valid until %s\nuse it with: oneprotect serve --agent-ca %s\n",
		ca.Cert.Subject.CommonName, certPath, keyPath, ca.Fingerprint(), ca.Cert.NotAfter.UTC().Format(time.RFC3339), *dir)
	return nil
}
