package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// These tests run `oneprotect serve` in-process through run(), the same code path as the
// binary, and stop it by cancelling its context, which is what SIGTERM does in main.

// logWatch is the server's stderr: it keeps the log and hands out values of key=value
// fields as they appear.
type logWatch struct {
	mu  sync.Mutex
	buf bytes.Buffer
	got chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{got: make(chan struct{}, 1)} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	select {
	case w.got <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor returns the addr= of the first log line with msg, waiting until the server logs it.
func (w *logWatch) waitFor(t *testing.T, msg string, exited <-chan int) string {
	t.Helper()
	re := regexp.MustCompile(`msg="?` + msg + `"? addr=(\S+)`)
	timeout := time.After(60 * time.Second)
	for {
		if m := re.FindStringSubmatch(w.String()); m != nil {
			return m[1]
		}
		select {
		case <-w.got:
		case code := <-exited:
			t.Fatalf("serve exited with %d before logging %q:\n%s", code, msg, w)
		case <-timeout:
			t.Fatalf("serve never logged %q:\n%s", msg, w)
		}
	}
}

// cli runs a command and returns its JSON output.
func cli(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("oneprotect %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	var v map[string]string
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("oneprotect %s: %q is not JSON", strings.Join(args, " "), out.String())
	}
	return v
}

// client talks to a running server over HTTP.
type client struct {
	t    testing.TB
	base string
	http *http.Client
}

func (c *client) post(path, token string, body any) (int, map[string]any, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, c.base+path, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var v map[string]any
	_ = json.Unmarshal(raw, &v)
	return resp.StatusCode, v, nil
}

func (c *client) gql(token, query string, vars map[string]any) map[string]any {
	c.t.Helper()
	status, v, err := c.post("/query", token, map[string]any{"query": query, "variables": vars})
	if err != nil || status != 200 || v["errors"] != nil {
		c.t.Fatalf("GraphQL %s: %d %v %v", query, status, v, err)
	}
	return v["data"].(map[string]any)
}

type fleetAgent struct{ id, assetID, token string }

// enrollFleet makes a site and n agents in the tenant of admin.
func (c *client) enrollFleet(admin string, n int) []fleetAgent {
	c.t.Helper()
	site := c.gql(admin, `mutation { createSite(input: {name: "HQ"}) { id } }`, nil)["createSite"].(map[string]any)["id"]
	tok := c.gql(admin, `mutation($s: ID!) { createEnrollmentToken(input: {siteId: $s, maxUses: 100}) { token } }`,
		map[string]any{"s": site})["createEnrollmentToken"].(map[string]any)["token"]
	agents := make([]fleetAgent, n)
	for i := range agents {
		status, v, err := c.post("/api/v1/agents/enroll", "", map[string]any{"enrollment_token": tok,
			"hostname": fmt.Sprintf("host-%d", i), "agent_version": "1.0.0"})
		if err != nil || status != http.StatusCreated {
			c.t.Fatalf("enroll: %d %v %v", status, v, err)
		}
		agents[i] = fleetAgent{id: v["agent_id"].(string), assetID: v["asset_id"].(string), token: v["token"].(string)}
	}
	return agents
}

// heartbeatBody is a deterministic body per heartbeat id, so that a repeat is "the same body".
func heartbeatBody(id string) map[string]any {
	return map[string]any{"heartbeat_id": id, "hostname": "host", "agent_version": "1.0.0"}
}

const submitMutation = `mutation($a: ID!, $in: HeartbeatInput!) { submitHeartbeat(agentId: $a, input: $in) { accepted duplicate } }`

// sendHeartbeat sends one heartbeat by REST or GraphQL; it reports whether it was
// acknowledged as accepted (and not a duplicate).
func (c *client) sendHeartbeat(a fleetAgent, id string, graphql bool) (bool, error) {
	if graphql {
		status, v, err := c.post("/query", a.token, map[string]any{"query": submitMutation,
			"variables": map[string]any{"a": a.id, "in": map[string]any{"heartbeatId": id, "hostname": "host", "agentVersion": "1.0.0"}}})
		if err != nil || status != 200 {
			return false, fmt.Errorf("status %d: %v", status, err)
		}
		data, _ := v["data"].(map[string]any)
		r, _ := data["submitHeartbeat"].(map[string]any)
		return r["accepted"] == true && r["duplicate"] == false, nil
	}
	status, v, err := c.post("/api/v1/agents/"+a.id+"/telemetry/heartbeat", a.token, heartbeatBody(id))
	if err != nil || status != 200 {
		return false, fmt.Errorf("status %d: %v", status, err)
	}
	return v["accepted"] == true && v["duplicate"] == false, nil
}

// backgroundJobs are the goroutines serve starts that must be gone when it returns.
var backgroundJobs = []string{
	"enrollment.(*Service).RunSweeper", "live.(*Broker).Run", "live.(*Broker).notifyLoop",
	"live.(*Broker).listen", "demo.(*simAgent).run", "graph.(*Sessions).checkTokens",
}

func runningJobs() []string {
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	var found []string
	for _, job := range backgroundJobs {
		if strings.Contains(stacks, job) {
			found = append(found, job)
		}
	}
	return found
}

// SIGTERM under load: every acknowledged heartbeat is stored, websockets are closed with
// 1001, the background jobs and the pprof listener are gone, and serve returns 0.
func TestShutdownUnderLoad(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		if code := run(context.Background(), []string{"migrate", "--db", dsn}, io.Discard, io.Discard); code != 0 {
			t.Fatalf("migrate: exit %d", code)
		}
		admin := cli(t, "user", "create", "--db", dsn, "--json", "--role", "admin", "--name", "ops",
			"--tenant", cli(t, "tenant", "create", "--db", dsn, "--json", "--name", "Shutdown "+testenv.Unique())["tenant_id"])["token"]

		t.Setenv("ONEPROTECT_AGENT_RATE_LIMIT", "0") // back-to-back heartbeats are the point here
		ctx, sigterm := context.WithCancel(context.Background())
		defer sigterm()
		stderr := newLogWatch()
		exited := make(chan int, 1)
		go func() {
			exited <- run(ctx, []string{"serve", "--db", dsn, "--addr", "127.0.0.1:0", "--pprof-addr", "127.0.0.1:0",
				"--demo", "--sweep-interval", "50ms"}, io.Discard, stderr)
		}()
		addr := stderr.waitFor(t, "serving", exited)
		pprofAddr := stderr.waitFor(t, "pprof listening", exited)
		c := &client{t: t, base: "http://" + addr, http: &http.Client{Timeout: 60 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
		agents := c.enrollFleet(admin, 8)

		// A subscriber, to be closed with 1001 (going away).
		wsCtx, wsCancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer wsCancel()
		ws, _, err := websocket.Dial(wsCtx, "ws://"+addr+"/query", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		init, _ := json.Marshal(map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer " + admin}})
		_ = ws.Write(wsCtx, websocket.MessageText, init)
		if _, msg, err := ws.Read(wsCtx); err != nil || !strings.Contains(string(msg), "connection_ack") {
			t.Fatalf("connection_init: %s %v", msg, err)
		}
		sub, _ := json.Marshal(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": `subscription { assetUpdated { id } }`}})
		_ = ws.Write(wsCtx, websocket.MessageText, sub)
		wsClosed := make(chan error, 1)
		go func() {
			for {
				if _, _, err := ws.Read(wsCtx); err != nil {
					wsClosed <- err
					return
				}
			}
		}()

		// Load: every agent sends heartbeats back to back, alternating REST and GraphQL,
		// until the server stops answering.
		var (
			mu    sync.Mutex
			acked = map[string][]string{} // agent id -> acknowledged heartbeat ids
			total atomic.Int64
			load  sync.WaitGroup
		)
		var stopped atomic.Int64
		for i, a := range agents {
			load.Go(func() {
				defer stopped.Add(1)
				for n := 0; ; n++ {
					id := fmt.Sprintf("hb-%d-%d", i, n)
					ok, err := c.sendHeartbeat(a, id, n%2 == 1)
					if err != nil {
						return // the server stopped accepting
					}
					if !ok {
						t.Errorf("heartbeat %s not accepted", id)
						return
					}
					mu.Lock()
					acked[a.id] = append(acked[a.id], id)
					mu.Unlock()
					total.Add(1)
				}
			})
		}
		for total.Load() < 300 && stopped.Load() == 0 {
			runtime.Gosched()
			time.Sleep(5 * time.Millisecond)
		}
		if stopped.Load() > 0 {
			t.Fatalf("load stopped before the signal:\n%s", stderr)
		}
		sigterm()
		var code int
		select {
		case code = <-exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("serve did not return after the signal:\n%s", stderr)
		}
		load.Wait()
		if code != 0 {
			t.Fatalf("serve exited with %d:\n%s", code, stderr)
		}
		if jobs := runningJobs(); len(jobs) > 0 {
			t.Errorf("background jobs still running after serve returned: %v", jobs)
		}
		select {
		case err := <-wsClosed:
			if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
				t.Errorf("subscription closed with %d (%v), want 1001 going away", got, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the subscription's websocket is still open after serve returned")
		}
		if conn, err := net.DialTimeout("tcp", pprofAddr, 5*time.Second); err == nil {
			conn.Close()
			t.Errorf("the pprof listener %s still accepts connections after serve returned", pprofAddr)
		}
		t.Logf("%d heartbeats acknowledged before and during shutdown", total.Load())

		// Restart on the same database: every acknowledged heartbeat is there.
		env := testenv.New(t, dsn, func(c *app.Config) { c.Now = time.Now })
		after := &client{t: t, base: env.Server.URL, http: http.DefaultClient}
		for _, a := range agents {
			ids := acked[a.id]
			d := after.gql(admin, `query($id: ID!) { asset(id: $id) { heartbeatCount } }`, map[string]any{"id": a.assetID})
			if got := d["asset"].(map[string]any)["heartbeatCount"].(float64); int(got) < len(ids) {
				t.Errorf("agent %s: heartbeatCount %v, but %d heartbeats were acknowledged", a.id, got, len(ids))
			}
			for _, id := range ids {
				status, v, err := after.post("/api/v1/agents/"+a.id+"/telemetry/heartbeat", a.token, heartbeatBody(id))
				if err != nil || status != 200 || v["duplicate"] != true {
					t.Errorf("acknowledged heartbeat %s is not stored: a repeat answered %d %v %v", id, status, v, err)
				}
			}
		}
	})
}
