package loadgen_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/loadgen"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// connLog records, per TCP connection the server saw, which agents' heartbeats came on it and
// which client certificate (URI SAN) it presented.
type connLog struct {
	mu     sync.Mutex
	agents map[string]map[string]bool // remote address -> agent ids in the heartbeat paths
	certs  map[string]string          // remote address -> the client certificate's URI SAN ("" none)
}

func (l *connLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.agents, l.certs = map[string]map[string]bool{}, map[string]string{}
}

func (l *connLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /api/v1/agents/{id}/telemetry/heartbeat
		if parts := strings.Split(r.URL.Path, "/"); len(parts) == 7 && parts[6] == "heartbeat" {
			uri := ""
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) == 1 {
				uri = r.TLS.PeerCertificates[0].URIs[0].String()
			}
			l.mu.Lock()
			if l.agents[r.RemoteAddr] == nil {
				l.agents[r.RemoteAddr] = map[string]bool{}
			}
			l.agents[r.RemoteAddr][parts[4]] = true
			l.certs[r.RemoteAddr] = uri
			l.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func noRateLimits(c *app.Config) { c.AgentRateLimit, c.EnrollRateLimit = pacing.Rate{}, pacing.Rate{} }

// The load generator with --mtls against a server that enforces mTLS, over real TLS
// handshakes: every agent enrolls with a CSR, keeps its certificate and key in the agents
// file, and sends all its heartbeats on one keep-alive connection of its own that presents its
// own certificate; no connection carries two agents. The same agents without their
// certificates are refused; with them, reused from the file, accepted again.
func TestLoadgenMTLS(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		var seen connLog
		seen.reset()
		env := testenv.NewTLSWith(t, dsn, seen.wrap, testenv.RequireMTLS, noRateLimits)
		ten := env.Tenant("Load mTLS")
		const agents = 8
		token := env.EnrollmentToken(ten, env.Site(ten, "HQ"), nil, agents)
		agentsFile := filepath.Join(t.TempDir(), "agents.json")
		cfg := loadgen.Config{Server: env.Server.URL, EnrollmentToken: token, Agents: agents, Concurrency: 3,
			Duration: time.Second, AgentsFile: agentsFile, MTLS: true, TLS: &tls.Config{RootCAs: env.Roots}}

		sum, err := loadgen.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", sum.Format())
		if sum.Enrolled != agents || sum.Requests == 0 || sum.Accepted != sum.Requests || sum.Errors != 0 ||
			len(sum.StatusCounts) != 1 || sum.StatusCounts["200"] != sum.Requests {
			t.Fatalf("enrolled %d, %d requests, %d accepted, %d errors, status %v", sum.Enrolled, sum.Requests, sum.Accepted, sum.Errors, sum.StatusCounts)
		}
		if !sum.AgentConnections || !sum.ClientCertificates || sum.Connect == nil || sum.Connect.Connections != agents {
			t.Fatalf("agent connections %v, client certificates %v, connect %+v", sum.AgentConnections, sum.ClientCertificates, sum.Connect)
		}
		if !strings.Contains(sum.Format(), "one per agent (TLS with each agent's client certificate)") {
			t.Fatalf("summary:\n%s", sum.Format())
		}
		checkOneAgentPerConn(t, &seen, agents, true)

		// Every heartbeat the server accepted is counted: the timed ones and the first one on each connection.
		d := env.MustGQL(ten.AdminToken, `{ assets(first: 50) { totalCount edges { node { heartbeatCount } } } }`, nil)
		conn := d["assets"].(map[string]any)
		var total float64
		for _, e := range conn["edges"].([]any) {
			total += e.(map[string]any)["node"].(map[string]any)["heartbeatCount"].(float64)
		}
		if conn["totalCount"].(float64) != agents || uint64(total) != sum.Accepted+agents {
			t.Fatalf("%v assets with %v heartbeats, want %d with %d", conn["totalCount"], total, agents, sum.Accepted+agents)
		}

		// The agents file keeps each agent's certificate and key, readable by its owner only.
		st, err := os.Stat(agentsFile)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("agents file: %v, mode %v", err, st.Mode())
		}
		var file struct {
			Agents []loadgen.Agent `json:"agents"`
		}
		data, _ := os.ReadFile(agentsFile)
		if err := json.Unmarshal(data, &file); err != nil || len(file.Agents) != agents {
			t.Fatalf("agents file (%v): %d agents", err, len(file.Agents))
		}
		for _, a := range file.Agents {
			if !strings.HasPrefix(a.Certificate, "-----BEGIN CERTIFICATE-----") || !strings.HasPrefix(a.Key, "-----BEGIN PRIVATE KEY-----") {
				t.Fatalf("agent %s: certificate %.40q, key %.30q", a.ID, a.Certificate, a.Key)
			}
		}

		// The same agents on their own TLS connections but without certificates: the server
		// answers 401 (not a failed handshake), and the load generator says what is missing.
		seen.reset()
		bearer := cfg
		bearer.MTLS, bearer.AgentConnections, bearer.EnrollmentToken = false, true, ""
		if _, err := loadgen.Run(context.Background(), bearer); err == nil ||
			!strings.Contains(err.Error(), "401="+strconv.Itoa(agents)) || !strings.Contains(err.Error(), "--mtls") {
			t.Fatalf("without certificates: %v", err)
		}
		checkOneAgentPerConn(t, &seen, agents, false)

		// With them again, from the file (no enrollment: the token's uses are spent).
		seen.reset()
		cfg.EnrollmentToken = ""
		sum, err = loadgen.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !sum.ReusedAgentsFile || sum.Requests == 0 || sum.Accepted != sum.Requests || sum.Connect == nil || sum.Connect.Connections != agents {
			t.Fatalf("reused %v, %d requests, %d accepted, connect %+v", sum.ReusedAgentsFile, sum.Requests, sum.Accepted, sum.Connect)
		}
		checkOneAgentPerConn(t, &seen, agents, true)
	})
}

// checkOneAgentPerConn: the server saw exactly one connection per agent, each carrying one
// agent's heartbeats and (withCerts) that agent's certificate, else none.
func checkOneAgentPerConn(t *testing.T, seen *connLog, agents int, withCerts bool) {
	t.Helper()
	seen.mu.Lock()
	defer seen.mu.Unlock()
	ids := map[string]bool{}
	for addr, byID := range seen.agents {
		if len(byID) != 1 {
			t.Fatalf("connection %s carried %d agents' heartbeats: %v", addr, len(byID), byID)
		}
		for id := range byID {
			ids[id] = true
			uri := seen.certs[addr]
			if withCerts && !strings.HasSuffix(uri, ":agent:"+id) {
				t.Fatalf("connection %s of agent %s presented %q", addr, id, uri)
			}
			if !withCerts && uri != "" {
				t.Fatalf("connection %s of agent %s presented %q, want no certificate", addr, id, uri)
			}
		}
	}
	if len(seen.agents) != agents || len(ids) != agents {
		t.Fatalf("%d connections for %d agents, want one each for %d", len(seen.agents), len(ids), agents)
	}
}

// Agent connections over plain HTTP: one keep-alive connection per agent, every heartbeat
// accepted. Without --agent-connections the workers share theirs (fewer connections than agents).
func TestLoadgenAgentConnections(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		var seen connLog
		seen.reset()
		env := testenv.New(t, dsn)
		// testenv.New has no wrapper option: serve the same app through the recorder.
		hs := httptest.NewServer(seen.wrap(env.App.Handler))
		t.Cleanup(hs.Close)
		srv := hs.URL
		ten := env.Tenant("Load conns")
		const agents = 6
		token := env.EnrollmentToken(ten, env.Site(ten, "HQ"), nil, agents)
		cfg := loadgen.Config{Server: srv, EnrollmentToken: token, Agents: agents, Concurrency: 2, Duration: time.Second,
			AgentsFile: filepath.Join(t.TempDir(), "agents.json"), AgentConnections: true}
		sum, err := loadgen.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Requests == 0 || sum.Accepted != sum.Requests || sum.ClientCertificates || sum.Connect == nil || sum.Connect.Connections != agents {
			t.Fatalf("%d requests, %d accepted, client certificates %v, connect %+v", sum.Requests, sum.Accepted, sum.ClientCertificates, sum.Connect)
		}
		checkOneAgentPerConn(t, &seen, agents, false)

		seen.reset()
		cfg.AgentConnections, cfg.EnrollmentToken = false, ""
		if sum, err = loadgen.Run(context.Background(), cfg); err != nil || sum.Accepted == 0 || sum.Connect != nil {
			t.Fatalf("shared connections: %v, %+v", err, sum)
		}
		seen.mu.Lock()
		defer seen.mu.Unlock()
		if len(seen.agents) > cfg.Concurrency {
			t.Fatalf("%d connections for %d workers", len(seen.agents), cfg.Concurrency)
		}
	})
}

func TestLoadgenMTLSNeedsHTTPS(t *testing.T) {
	_, err := loadgen.Run(context.Background(), loadgen.Config{Server: "http://127.0.0.1:1", Agents: 1, Concurrency: 1, MTLS: true})
	if err == nil || !strings.Contains(err.Error(), "--mtls needs an https:// --server") {
		t.Fatalf("got %v", err)
	}
}
