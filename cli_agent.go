package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/pki"
)

// agentCommand runs `oneprotect agent`: a real agent for this machine.
func agentCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent")
	server := fs.String("server", "", "the service's base URL, e.g. http://127.0.0.1:8080 (needed to enroll; later: the stored one)")
	enrollToken := fs.String("enrollment-token", "", "enrollment token: needed to enroll; a new one re-enrolls a revoked agent or enrolls with another --server")
	collectorToken := fs.String("collector-token", "", "send heartbeats as this collector instead of as the agent")
	stateDir := fs.String("state-dir", agent.DefaultStateDir(), "directory that keeps the agent's identity and token (created 0700)")
	once := fs.Bool("once", false, "send one heartbeat, then exit")
	interval := fs.Duration("interval", 0, "heartbeat interval (default: the interval the server advertises)")
	asJSON := fs.Bool("json", false, "with --once: print the heartbeat result as JSON; otherwise log JSON to stderr")
	mtls := fs.Bool("mtls", false, "get a client certificate at enrollment (key kept 0600 in --state-dir), present it on every request, renew it at two thirds of its lifetime")
	serverCA := fs.String("server-ca", "", "trust the server's HTTPS certificate if this CA (PEM file) signed it, instead of the system's CAs")
	serverFpr := fs.String("server-fingerprint", "", "trust only the server certificate with this SHA-256 fingerprint (as serve --tls-self-signed prints it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *stateDir == "" {
		return errors.New("--state-dir is required")
	}
	if *interval < 0 {
		return errors.New("--interval must not be negative")
	}
	hc, err := agentHTTPClient(*serverCA, *serverFpr)
	if err != nil {
		return err
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, nil)
	if *asJSON && !*once {
		handler = slog.NewJSONHandler(stderr, nil)
	}
	var last struct {
		id  string
		res *agent.HeartbeatResult
	}
	err = agent.Run(ctx, agent.Config{
		Server: *server, EnrollmentToken: *enrollToken, CollectorToken: *collectorToken, StateDir: *stateDir,
		Once: *once, Interval: *interval, Log: slog.New(handler),
		HTTP: hc, MTLS: *mtls,
		OnHeartbeat: func(id string, res *agent.HeartbeatResult) {
			last.id, last.res = id, res
		},
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if *once && *asJSON && last.res != nil {
		return printJSON(stdout, map[string]any{"agent_id": last.res.AgentID, "asset_id": last.res.AssetID,
			"heartbeat_id": last.id, "accepted": last.res.Accepted, "duplicate": last.res.Duplicate,
			"received_at": last.res.ReceivedAt, "next_heartbeat_seconds": last.res.NextHeartbeatSeconds})
	}
	return nil
}

func agentHTTPClient(serverCA, fingerprint string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cfg, err := serverTrust(serverCA, fingerprint)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = cfg
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}, nil
}

// serverTrust is the client TLS configuration of --server-ca and --server-fingerprint (agent
// and load generator): the system's roots unless one is given.
func serverTrust(serverCA, fingerprint string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if serverCA != "" {
		pemData, err := os.ReadFile(serverCA)
		if err != nil {
			return nil, fmt.Errorf("--server-ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("--server-ca: %s holds no PEM certificate", serverCA)
		}
		cfg.RootCAs = roots
	}
	if fingerprint != "" {
		want := strings.ToUpper(strings.NewReplacer(":", "", " ", "").Replace(fingerprint))
		if len(want) != 64 {
			return nil, errors.New("--server-fingerprint: want a SHA-256 fingerprint (64 hex digits, colons allowed)")
		}
		// Pinning replaces the chain check: the server must show exactly this certificate.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 && strings.ReplaceAll(pki.Fingerprint(raw[0]), ":", "") == want {
				return nil
			}
			return errors.New("the server's certificate does not have the --server-fingerprint given")
		}
	}
	return cfg, nil
}
