package loadgen

// Agent connections and mTLS. With Config.AgentConnections every simulated agent sends its
// heartbeats on a keep-alive connection of its own, as a real fleet does (one machine, one
// connection), instead of the workers' shared ones. With Config.MTLS each agent also makes an
// ECDSA P-256 key and a CSR at enrollment, keeps the certificate the server signs, and presents
// it in its own connection's TLS handshake: the connection is that agent's identity, so it is
// never shared with another agent. Before the timed heartbeats every connection is opened with
// one first heartbeat on it (the connect phase, reported apart): the timed phase then measures
// heartbeats with the handshakes amortized by keep-alive, as a fleet's steady state.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/pki"
)

// ConnectPhase is the opening of the agents' own connections: a TCP connect, the TLS handshake
// (https) and one first heartbeat on each.
type ConnectPhase struct {
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
	Latency     Latency `json:"latency_ms"` // the connect, handshake and first heartbeat
}

// agentConn is one agent's own connection; a worker holds mu for the length of a request (a
// real agent, too, sends one heartbeat at a time).
type agentConn struct {
	mu  sync.Mutex
	raw rawConn
}

// conn is the connection t's request goes on: the agent's own (held until release) or the
// worker's.
func (t *target) conn(worker *rawConn) (c *rawConn, release func()) {
	if t.own == nil {
		return worker, func() {}
	}
	t.own.mu.Lock()
	return &t.own.raw, t.own.mu.Unlock
}

// checkMTLS checks the agent-connection settings (after the rest of check).
func (c *Config) checkMTLS(u *url.URL) error {
	if !c.MTLS {
		return nil
	}
	if u.Scheme != "https" {
		return errors.New("--mtls needs an https:// --server (client certificates go in the TLS handshake)")
	}
	c.AgentConnections = true // a client certificate is one agent's: never on a shared connection
	return nil
}

// enrollmentCSR is the CSR an agent enrolls with and its private key (PEM), under MTLS.
func enrollmentCSR(cfg Config, host string) (csr, key string, err error) {
	if !cfg.MTLS {
		return "", "", nil
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(host)
	if err != nil {
		return "", "", err
	}
	return string(csrPEM), string(keyPEM), nil
}

// checkIssued makes sure an enrollment with a CSR was given a certificate.
func checkIssued(cfg Config, en *agent.Enrollment) error {
	if cfg.MTLS && en.Certificate == "" {
		return errors.New("the server signed no certificate for the CSR (does it run with --agent-ca?)")
	}
	return nil
}

func haveCertificates(agents []Agent) bool {
	for _, a := range agents {
		if a.Certificate == "" || a.Key == "" {
			return false
		}
	}
	return true
}

// agentConnBuffer is the answer buffer of an agent's own connection: heartbeat answers are
// a few hundred bytes, and a fleet of connections should not cost 16 KiB each.
const agentConnBuffer = 4 << 10

// newAgentConns makes (without opening) one connection per agent to cfg.Server: plain TCP for
// http://, TLS for https:// (trusting cfg.TLS), with the agent's certificate under MTLS.
func newAgentConns(cfg Config, agents []Agent) ([]*agentConn, error) {
	u, err := url.Parse(cfg.Server)
	if err != nil {
		return nil, err
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	var base *tls.Config
	if u.Scheme == "https" {
		base = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			base = cfg.TLS.Clone()
		}
		base.NextProtos = []string{"http/1.1"} // what rawConn speaks
		if base.ServerName == "" {
			base.ServerName = u.Hostname()
		}
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	conns := make([]*agentConn, len(agents))
	for i, a := range agents {
		c := &agentConn{raw: rawConn{addr: addr, bufSize: agentConnBuffer}}
		if base != nil {
			tc := base
			if cfg.MTLS {
				pair, err := tls.X509KeyPair([]byte(a.Certificate), []byte(a.Key))
				if err != nil {
					return nil, fmt.Errorf("agent %s: its certificate and key: %w", a.ID, err)
				}
				tc = base.Clone()
				tc.Certificates = []tls.Certificate{pair}
			}
			c.raw.dial = func() (net.Conn, error) {
				conn, err := tls.DialWithDialer(dialer, "tcp", addr, tc)
				if err != nil {
					return nil, err
				}
				return conn, nil
			}
		}
		conns[i] = c
	}
	return conns, nil
}

// openAgentConns returns the agents' own connections (nil without AgentConnections), opened
// with one first heartbeat each, timed as the connect phase. With OrderOnce the run itself is
// every agent's first heartbeat, so the connections open in it instead.
func openAgentConns(ctx context.Context, cfg Config, agents []Agent, sum *Summary) ([]*agentConn, error) {
	if !cfg.AgentConnections {
		return nil, nil
	}
	conns, err := newAgentConns(cfg, agents)
	if err != nil {
		return nil, err
	}
	if cfg.Order == OrderOnce {
		return conns, nil
	}
	first := cfg
	first.Order, first.Progress = OrderOnce, nil
	fs := &Summary{StatusCounts: map[string]uint64{}, GraphQLErrorCodes: map[string]uint64{}}
	drive(ctx, first, agents, conns, fs)
	if err := ctx.Err(); err != nil {
		closeAgentConns(conns)
		return nil, err
	}
	if fs.Errors > 0 {
		closeAgentConns(conns)
		detail := "status codes " + formatCounts(fs.StatusCounts)
		if len(fs.GraphQLErrorCodes) > 0 {
			detail += ", GraphQL errors " + formatCounts(fs.GraphQLErrorCodes)
		}
		return nil, fmt.Errorf("opening the agents' connections: %d of %d first heartbeats failed (%s)%s",
			fs.Errors, fs.Requests, detail, firstHeartbeatHint(cfg, fs))
	}
	sum.Connect = &ConnectPhase{Connections: len(conns), Seconds: fs.DurationSeconds, PerSecond: fs.RequestsPerSecond,
		Latency: fs.Latency}
	return conns, nil
}

func firstHeartbeatHint(cfg Config, fs *Summary) string {
	switch {
	case fs.StatusCounts["transport_error"] > 0 && strings.HasPrefix(cfg.Server, "https:"):
		return "; transport errors over TLS: is the server's certificate trusted (--server-ca, --server-fingerprint)?"
	case fs.StatusCounts["401"] > 0 && !cfg.MTLS:
		return "; a 401 from a server with --require-agent-mtls wants --mtls"
	}
	return ""
}

func closeAgentConns(conns []*agentConn) {
	for _, c := range conns {
		c.mu.Lock()
		c.raw.close()
		c.mu.Unlock()
	}
}

// formatConnections is the connect phase's line of Format.
func (s *Summary) formatConnections(b *strings.Builder) {
	if !s.AgentConnections {
		return
	}
	kind := "plain TCP"
	switch {
	case s.ClientCertificates:
		kind = "TLS with each agent's client certificate"
	case strings.HasPrefix(s.Server, "https:"):
		kind = "TLS, no client certificate"
	}
	if c := s.Connect; c != nil {
		fmt.Fprintf(b, "connections:  %d, one per agent (%s), opened with a first heartbeat each in %.2fs (%.0f/s, p50 %.2fms, p99 %.2fms)\n",
			c.Connections, kind, c.Seconds, c.PerSecond, c.Latency.P50, c.Latency.P99)
	} else {
		fmt.Fprintf(b, "connections:  one per agent (%s), opened by the run\n", kind)
	}
}
