package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// runAgent runs the agent runtime until it has sent n accepted heartbeats (then cancels it)
// or until it returns by itself; it returns Run's error and the accepted heartbeat ids.
func runAgent(t *testing.T, cfg agent.Config, n int) (error, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var accepted []string
	cfg.OnHeartbeat = func(id string, res *agent.HeartbeatResult) {
		mu.Lock()
		defer mu.Unlock()
		if !res.Accepted {
			t.Errorf("heartbeat %s not accepted: %+v", id, res)
		}
		accepted = append(accepted, id)
		if len(accepted) >= n {
			cancel()
		}
	}
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg) }()
	select {
	case err := <-done:
		mu.Lock()
		defer mu.Unlock()
		return err, append([]string(nil), accepted...)
	case <-time.After(60 * time.Second): // a guard against a hang, not a timing assertion
		t.Fatal("the agent neither sent its heartbeats nor stopped")
		return nil, nil
	}
}

func TestAgentRuntime(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("AgentCo")
		site := env.Site(ten, "HQ")
		enrollToken := env.EnrollmentToken(ten, site, nil, 10)
		stateDir := filepath.Join(t.TempDir(), "agent")
		base := agent.Config{Server: env.Server.URL, StateDir: stateDir, Interval: 20 * time.Millisecond,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

		identities := func() float64 {
			d := env.MustGQL(ten.AdminToken, `query($s: ID) { agentIdentities(filter: {siteId: $s}) { totalCount } }`, map[string]any{"s": site})
			return d["agentIdentities"].(map[string]any)["totalCount"].(float64)
		}
		asset := func(id string) map[string]any {
			d := env.MustGQL(ten.AdminToken, `query($id: ID!) { asset(id: $id) { hostname os { name version kernel arch }
				ipAddresses macAddresses cpuCount memoryBytes uptimeSeconds heartbeatCount agent { agentId status } } }`, map[string]any{"id": id})
			a, _ := d["asset"].(map[string]any)
			if a == nil {
				t.Fatalf("asset %s not found", id)
			}
			return a
		}
		mustState := func() *agent.State {
			st, err := agent.LoadState(stateDir)
			if err != nil || st == nil {
				t.Fatalf("state: %v %v", st, err)
			}
			return st
		}

		t.Run("enrolls, keeps its identity 0600 and reports the host inventory", func(t *testing.T) {
			cfg := base
			cfg.EnrollmentToken = enrollToken
			err, beats := runAgent(t, cfg, 3)
			if err != nil {
				t.Fatalf("Run after cancel = %v, want nil", err)
			}
			if len(beats) < 3 || beats[0] == beats[1] {
				t.Fatalf("heartbeats %v: want 3 with distinct ids", beats)
			}
			fi, err := os.Stat(filepath.Join(stateDir, agent.StateFile))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("state.json: %v, mode %v", err, fi.Mode())
			}
			if di, err := os.Stat(stateDir); err != nil || di.Mode().Perm() != 0o700 {
				t.Fatalf("state dir mode %v (%v)", di.Mode(), err)
			}
			st := mustState()
			a := asset(st.AssetID)
			if a["hostname"] != agent.Hostname() {
				t.Errorf("hostname %v, want %q", a["hostname"], agent.Hostname())
			}
			osInfo, _ := a["os"].(map[string]any)
			if osInfo == nil || osInfo["name"] == "" || osInfo["name"] == nil || osInfo["arch"] == nil {
				t.Errorf("os = %v", a["os"])
			}
			if n, _ := a["cpuCount"].(float64); n <= 0 {
				t.Errorf("cpuCount = %v", a["cpuCount"])
			}
			if n, _ := a["memoryBytes"].(float64); n <= 0 {
				t.Errorf("memoryBytes = %v", a["memoryBytes"])
			}
			if len(agent.Collect().IPAddresses) > 0 && len(a["ipAddresses"].([]any)) == 0 {
				t.Errorf("ipAddresses empty though the host has some")
			}
			if n := a["heartbeatCount"].(float64); n < 3 {
				t.Errorf("heartbeatCount = %v, want >= 3", n)
			}
			if ag := a["agent"].(map[string]any); ag["agentId"] != st.AgentID || ag["status"] != "ACTIVE" {
				t.Errorf("asset's agent = %v", ag)
			}
		})

		t.Run("a restart reuses the identity", func(t *testing.T) {
			before := mustState()
			cfg := base
			cfg.Once = true // and no enrollment token: it must not need one
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("once: err %v, beats %v", err, beats)
			}
			if after := mustState(); after.AgentID != before.AgentID || after.Token != before.Token {
				t.Fatalf("identity changed: %s -> %s", before.AgentID, after.AgentID)
			}
			if n := identities(); n != 1 {
				t.Fatalf("%v identities in the site, want 1 (no new enrollment)", n)
			}
		})

		for _, tc := range []struct {
			name   string
			status int
			code   string
		}{{"503", http.StatusServiceUnavailable, "unavailable"}, {"429", http.StatusTooManyRequests, "rate_limited"}} {
			t.Run(tc.name+" with Retry-After is retried later with the same heartbeat_id", func(t *testing.T) {
				proxy := newInjector(t, env.Server.URL, cannedAnswer{tc.status, tc.code, "1"})
				countBefore := asset(mustState().AssetID)["heartbeatCount"].(float64)
				var waits []time.Duration
				cfg := base
				cfg.Server = proxy.URL
				cfg.Once = true
				cfg.OnRetry = func(id string, wait time.Duration, err error) { waits = append(waits, wait) }
				err, beats := runAgent(t, cfg, 1)
				if err != nil || len(beats) != 1 {
					t.Fatalf("once through the proxy: err %v, beats %v", err, beats)
				}
				seen, forwarded := proxy.log()
				if len(seen) != 2 || seen[0] == "" || seen[0] != seen[1] || seen[1] != beats[0] {
					t.Fatalf("heartbeat ids sent %v (accepted %v): want the same id twice", seen, beats)
				}
				if len(waits) != 1 || waits[0] < time.Second {
					t.Fatalf("retry waits %v: want one wait of at least Retry-After (1s)", waits)
				}
				if len(forwarded) != 1 || !strings.Contains(forwarded[0], `"duplicate":false`) {
					t.Fatalf("service answers %v: want one, not a duplicate", forwarded)
				}
				if n := asset(mustState().AssetID)["heartbeatCount"].(float64); n != countBefore+1 {
					t.Fatalf("heartbeatCount %v -> %v, want +1", countBefore, n)
				}
			})
		}

		t.Run("a 400 is not retried: the next interval sends a new heartbeat", func(t *testing.T) {
			proxy := newInjector(t, env.Server.URL, cannedAnswer{http.StatusBadRequest, "invalid_request", ""})
			var retries int
			cfg := base
			cfg.Server = proxy.URL
			cfg.OnRetry = func(string, time.Duration, error) { retries++ }
			err, beats := runAgent(t, cfg, 1)
			if err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
			seen, _ := proxy.log()
			if retries != 0 || len(seen) != 2 || seen[0] == seen[1] || seen[1] != beats[0] {
				t.Fatalf("ids sent %v, retries %d: want the refused heartbeat dropped and a new one sent", seen, retries)
			}
		})

		t.Run("unknown_agent re-enrolls with the enrollment token", func(t *testing.T) {
			st := mustState()
			st.AgentID = "01a00000-0000-7000-8000-000000000000" // an agent the server never heard of
			if err := agent.SaveState(stateDir, st); err != nil {
				t.Fatal(err)
			}
			cfg := base
			cfg.EnrollmentToken = enrollToken
			cfg.Once = true
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
			after := mustState()
			if after.AgentID == st.AgentID || after.AssetID != st.AssetID {
				t.Fatalf("re-enrollment: agent %s asset %s (was asset %s): want a new identity on the same asset (same machine id)",
					after.AgentID, after.AssetID, st.AssetID)
			}
			if n := identities(); n != 2 {
				t.Fatalf("%v identities, want 2", n)
			}
		})

		t.Run("a collector sends for its agent", func(t *testing.T) {
			colID, colToken := env.Collector(ten, site, "relay")
			tok := env.EnrollmentToken(ten, site, &colID, 1)
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "collected")
			cfg.EnrollmentToken, cfg.CollectorToken, cfg.MachineID, cfg.Once = tok, colToken, "collected-machine", true
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
		})

		t.Run("a revoked agent stops with agent_revoked", func(t *testing.T) {
			st := mustState()
			env.MustGQL(ten.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "test") { status } }`, map[string]any{"a": st.AgentID})
			cfg := base
			cfg.EnrollmentToken = enrollToken // still holding one must not make it re-enroll
			err, beats := runAgent(t, cfg, 100)
			var stop *agent.StopError
			if !errors.As(err, &stop) || stop.Code != "agent_revoked" || !strings.Contains(err.Error(), "agent_revoked") || len(beats) != 0 {
				t.Fatalf("Run = %v (beats %v), want a StopError naming agent_revoked", err, beats)
			}
			if after := mustState(); after.AgentID != st.AgentID {
				t.Fatal("a revoked agent enrolled again")
			}
		})

		t.Run("a stale agent stops with agent_stale", func(t *testing.T) {
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "stale")
			cfg.EnrollmentToken, cfg.MachineID, cfg.Once = enrollToken, "stale-machine", true
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
			env.Clock.Advance(200 * time.Hour) // longer than the default --stale-after (168h)
			if n, err := env.App.Enrollment.Sweep(context.Background(), 168*time.Hour); err != nil || n == 0 {
				t.Fatalf("sweep: %d, %v", n, err)
			}
			cfg.Once = false
			err, _ := runAgent(t, cfg, 100)
			var stop *agent.StopError
			if !errors.As(err, &stop) || stop.Code != "agent_stale" || !strings.Contains(err.Error(), "agent_stale") {
				t.Fatalf("Run = %v, want a StopError naming agent_stale", err)
			}
		})
	})
}

// cannedAnswer is an error the injector answers instead of the service.
type cannedAnswer struct {
	status     int
	code       string
	retryAfter string
}

// injector is a recording proxy in front of the service: it answers the first heartbeats
// with canned errors, forwards the rest, and records every heartbeat_id it saw.
type injector struct {
	*httptest.Server
	mu        sync.Mutex
	canned    []cannedAnswer
	seen      []string
	forwarded []string
}

func newInjector(t *testing.T, target string, canned ...cannedAnswer) *injector {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	in := &injector{canned: canned}
	in.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/telemetry/heartbeat") {
			rp.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var hb struct {
			HeartbeatID string `json:"heartbeat_id"`
		}
		_ = json.Unmarshal(body, &hb)
		in.mu.Lock()
		in.seen = append(in.seen, hb.HeartbeatID)
		var answer *cannedAnswer
		if len(in.canned) > 0 {
			answer = &in.canned[0]
			in.canned = in.canned[1:]
		}
		in.mu.Unlock()
		if answer != nil {
			if answer.retryAfter != "" {
				w.Header().Set("Retry-After", answer.retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(answer.status)
			_, _ = w.Write([]byte(`{"error":{"code":"` + answer.code + `","message":"injected by the test"}}`))
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		in.mu.Lock()
		in.forwarded = append(in.forwarded, rec.Body.String())
		in.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(in.Close)
	return in
}

// log returns the heartbeat ids seen and the service's answers forwarded so far.
func (in *injector) log() (seen, forwarded []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.seen...), append([]string(nil), in.forwarded...)
}
