package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// The real binary, killed with SIGKILL while heartbeats stream in: every heartbeat that was
// acknowledged must be there after a restart, and none may be counted twice.
func TestAcknowledgedHeartbeatsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildBinary(t)
	for _, db := range testenv.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			dsn := db.New(t)
			var tenant struct {
				TenantID string `json:"tenant_id"`
			}
			var migrated struct{}
			cli(t, bin, &migrated, "migrate", "--db", dsn, "--json") // admin commands never create a database
			cli(t, bin, &tenant, "tenant", "create", "--db", dsn, "--name", "Durable", "--json")
			var user struct {
				Token string `json:"token"`
			}
			cli(t, bin, &user, "user", "create", "--db", dsn, "--tenant", tenant.TenantID, "--name", "ops", "--role", "admin", "--json")

			srv := startServer(t, bin, dsn)
			c := &client{base: srv.base, t: t}
			site := c.gql(user.Token, `mutation { createSite(input: {name: "HQ"}) { id } }`)["createSite"].(map[string]any)["id"].(string)
			tok := c.gql(user.Token, fmt.Sprintf(`mutation { createEnrollmentToken(input: {siteId: %q, maxUses: 10}) { token } }`, site))["createEnrollmentToken"].(map[string]any)["token"].(string)
			type agent struct{ id, token string }
			var agents []agent
			for i := range 8 {
				status, body := c.post("/api/v1/agents/enroll", "", map[string]any{"enrollment_token": tok, "hostname": fmt.Sprintf("h%d", i)})
				if status != http.StatusCreated {
					t.Fatalf("enroll: %d %v", status, body)
				}
				agents = append(agents, agent{body["agent_id"].(string), body["token"].(string)})
			}

			// Stream heartbeats from every agent; kill the server mid-stream.
			type sent struct {
				agent agent
				id    string
				acked bool
			}
			var mu sync.Mutex
			var all []*sent
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for _, a := range agents {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						s := &sent{agent: a, id: fmt.Sprintf("%s-%d", a.id, n)}
						mu.Lock()
						all = append(all, s)
						mu.Unlock()
						status, body, err := c.tryPost(heartbeatPath(a.id), a.token, map[string]any{"heartbeat_id": s.id, "hostname": "h"})
						if err != nil {
							return // the server is gone
						}
						if status == http.StatusOK && body["duplicate"] == false {
							mu.Lock()
							s.acked = true
							mu.Unlock()
						}
					}
				}()
			}
			time.Sleep(700 * time.Millisecond)
			srv.kill()
			close(stop)
			wg.Wait()

			acked := 0
			for _, s := range all {
				if s.acked {
					acked++
				}
			}
			if acked == 0 {
				t.Fatal("no heartbeat was acknowledged before the kill")
			}
			t.Logf("%d heartbeats sent, %d acknowledged before SIGKILL", len(all), acked)

			srv = startServer(t, bin, dsn)
			c.base = srv.base
			for _, s := range all {
				status, body := c.post(heartbeatPath(s.agent.id), s.agent.token, map[string]any{"heartbeat_id": s.id, "hostname": "h"})
				if status != http.StatusOK {
					t.Fatalf("resend %s: %d %v", s.id, status, body)
				}
				if s.acked && body["duplicate"] != true {
					t.Fatalf("acknowledged heartbeat %s was lost in the crash", s.id)
				}
			}
			// Now every heartbeat is stored exactly once.
			d := c.gql(user.Token, `{ assets(first: 50) { edges { node { heartbeatCount } } }
				events(filter: {type: "asset.telemetry.received"}) { totalCount } }`)
			total := 0
			for _, e := range d["assets"].(map[string]any)["edges"].([]any) {
				total += int(e.(map[string]any)["node"].(map[string]any)["heartbeatCount"].(float64))
			}
			events := int(d["events"].(map[string]any)["totalCount"].(float64))
			if total != len(all) || events != len(all) {
				t.Fatalf("heartbeatCount sum %d, telemetry events %d, want both %d", total, events, len(all))
			}
		})
	}
}

func heartbeatPath(agentID string) string {
	return "/api/v1/agents/" + agentID + "/telemetry/heartbeat"
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildBinary builds the oneprotect binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oneprotect-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "oneprotect")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", builtBin, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func cli(t *testing.T, bin string, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("oneprotect %v: %v\n%s", args, err, stderr.String())
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("oneprotect %v printed %q: %v", args, data, err)
	}
}

type server struct {
	cmd  *exec.Cmd
	base string
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// startServer runs `oneprotect serve` on a free port and waits until it is ready.
func startServer(t *testing.T, bin, dsn string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// A stress test: each agent streams heartbeats far faster than any real agent would.
	cmd := exec.Command(bin, "serve", "--db", dsn, "--addr", addr, "--agent-rate-limit", "0", "--enroll-rate-limit", "0")
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, base: "http://" + addr}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			s.kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server did not become ready")
	return nil
}

type client struct {
	base string
	t    *testing.T
}

func (c *client) tryPost(path, token string, body any) (int, map[string]any, error) {
	data, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, nil
}

func (c *client) post(path, token string, body any) (int, map[string]any) {
	c.t.Helper()
	status, out, err := c.tryPost(path, token, body)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	return status, out
}

func (c *client) gql(token, query string) map[string]any {
	c.t.Helper()
	status, out := c.post("/query", token, map[string]any{"query": query})
	if status != http.StatusOK || out["errors"] != nil {
		c.t.Fatalf("GraphQL %d: %v", status, out)
	}
	return out["data"].(map[string]any)
}
