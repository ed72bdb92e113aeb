package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/graph"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Subscription bounds and shared update reads (issue 11).

// rateLimited reads until an `error` message arrives and reports whether it says
// RATE_LIMITED; next messages on the way are skipped.
func rateLimited(t *testing.T, c *wsClient) (id string, ok bool) {
	t.Helper()
	for {
		m, err := c.read(generous)
		if err != nil {
			t.Fatalf("waiting for an error message: %v", err)
		}
		if m.Type == "next" {
			continue
		}
		if m.Type != "error" {
			t.Fatalf("got %s %s, want an error message", m.Type, m.Payload)
		}
		var errs []struct {
			Extensions map[string]any `json:"extensions"`
		}
		_ = json.Unmarshal(m.Payload, &errs)
		return m.ID, len(errs) == 1 && errs[0].Extensions["code"] == "RATE_LIMITED"
	}
}

// live waits until subscription id of c delivers an update (heartbeating a meanwhile).
func live(t *testing.T, env *testenv.Env, c *wsClient, id string, a *testenv.Agent) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for time.Now().Before(deadline) {
		heartbeat(t, env, a, nil)
		m, err := c.read(time.Second)
		if err == nil && m.Type == "next" && m.ID == id {
			return
		}
		if err == nil && m.Type == "error" {
			t.Fatalf("subscription %s: %s", m.ID, m.Payload)
		}
	}
	t.Fatalf("subscription %s never delivered", id)
}

func TestSubscriptionBounds(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, wsLimits(func(l *graph.WebsocketLimits) {
			l.MaxSubscriptionsPerConnection = 2
			l.MaxSubscriptionsPerPrincipal = 3
		}))
		f := env.NewFleet("Bounds")

		// Three on a connection that holds two: exactly one is refused.
		c1 := connect(t, env, f.Tenant.ViewerToken)
		for _, id := range []string{"a", "b", "c"} {
			c1.subscribe(id, nil)
		}
		refusedID, ok := rateLimited(t, c1)
		if !ok {
			t.Fatalf("third subscription on a connection: not RATE_LIMITED")
		}
		var kept []string
		for _, id := range []string{"a", "b", "c"} {
			if id != refusedID {
				kept = append(kept, id)
			}
		}
		for _, id := range kept {
			live(t, env, c1, id, f.Agent)
		}

		// The principal holds two; a second connection may add one more, not two.
		c2 := connect(t, env, f.Tenant.ViewerToken)
		c2.subscribe("x", nil)
		c2.subscribe("y", nil)
		if _, ok := rateLimited(t, c2); !ok {
			t.Fatalf("fourth subscription of a principal: not RATE_LIMITED")
		}
		// Another principal of the same tenant is not affected.
		c3 := connect(t, env, f.Tenant.AdminToken)
		c3.subscribe("1", nil)
		live(t, env, c3, "1", f.Agent)

		// Completing one frees its slot (once the server has ended it: retry while refused).
		c1.send(map[string]any{"id": kept[0], "type": "complete"})
		deadline := time.Now().Add(generous)
		for i := 0; ; i++ {
			if time.Now().After(deadline) {
				t.Fatal("a completed subscription's slot never came back")
			}
			id := "again-" + strconv.Itoa(i)
			c1.subscribe(id, nil)
			heartbeat(t, env, f.Agent, nil)
			accepted := false
			for {
				m, err := c1.read(generous)
				if err != nil {
					t.Fatal(err)
				}
				if m.ID != id {
					continue // the other subscription's updates, the completed one's complete
				}
				accepted = m.Type == "next"
				break
			}
			if accepted {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// tableReads counts the SELECTs bun runs, by table.
type tableReads struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *tableReads) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }
func (c *tableReads) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	q := e.Query
	if !strings.HasPrefix(strings.TrimSpace(strings.ToUpper(q)), "SELECT") {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, table := range []string{"assets", "sites", "agent_identities"} {
		if strings.Contains(q, `"`+table+`"`) {
			c.n[table]++
		}
	}
}

func (c *tableReads) during(fn func()) map[string]int {
	c.mu.Lock()
	c.n = map[string]int{}
	c.mu.Unlock()
	fn()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int{}
	return out
}

func TestSubscribersShareOneRead(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		reads := &tableReads{n: map[string]int{}}
		env.App.Store.AddQueryHook(reads)
		f := env.NewFleet("Shared")
		other := env.NewFleet("Other")
		agent := f.Agent

		var subs []*wsClient
		add := func(n int) {
			for range n {
				c := connect(t, env, f.Tenant.ViewerToken)
				c.subscribe("1", nil)
				prime(t, env, c, agent)
				subs = append(subs, c)
			}
		}
		// one heartbeat, and every subscriber's copy of it (identified by heartbeatCount)
		beat := func() map[string]int {
			want := 0.0
			return reads.during(func() {
				heartbeat(t, env, agent, nil)
				d := env.MustGQL(f.Tenant.ViewerToken, `query($id: ID!) { asset(id: $id) { heartbeatCount } }`,
					map[string]any{"id": agent.AssetID})
				want = d["asset"].(map[string]any)["heartbeatCount"].(float64)
				for _, c := range subs {
					for {
						a, err := c.nextAsset(generous)
						if err != nil {
							t.Fatal(err)
						}
						if a["id"] == agent.AssetID && a["heartbeatCount"].(float64) >= want {
							if a["site"].(map[string]any)["id"] == nil || a["agent"].(map[string]any)["status"] != "ACTIVE" {
								t.Fatalf("update = %v", a)
							}
							break
						}
					}
				}
			})
		}
		// The asset query above reads assets once itself.
		const own = 1

		// Another tenant's subscriber is there throughout and sees none of it.
		stranger := connect(t, env, other.Tenant.ViewerToken)
		stranger.subscribe("1", nil)
		prime(t, env, stranger, other.Agent)

		add(1)
		beat() // settles what priming left in flight
		one := beat()
		add(7)
		beat()
		eight := beat()
		t.Logf("reads per update: 1 subscriber %v, 8 subscribers %v", one, eight)
		if eight["assets"]-own != 1 {
			t.Errorf("8 subscribers of one update: %d asset reads, want 1", eight["assets"]-own)
		}
		for table, n := range eight {
			if n != one[table] {
				t.Errorf("%s: %d reads with 8 subscribers, %d with 1", table, n, one[table])
			}
		}
		if m, err := stranger.read(100 * time.Millisecond); err == nil {
			if a, _ := json.Marshal(m); strings.Contains(string(a), agent.AssetID) {
				t.Fatalf("another tenant's subscriber got %s", a)
			}
		}
	})
}

func TestSubscriptionOverPOSTAnswersAtOnce(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		tenant := env.Tenant("Post")
		r := env.GQL(tenant.ViewerToken, `subscription { assetUpdated { id } }`, nil)
		if r.Code() != "INVALID_REQUEST" || !strings.Contains(r.Errors[0].Message, "WebSocket") || r.Data != nil {
			t.Fatalf("subscription over POST: %d %s", r.Status, r.Raw)
		}
		if resp := env.Do(http.MethodGet, "/query?query="+`subscription{assetUpdated{id}}`, tenant.ViewerToken, nil); resp.Status != http.StatusMethodNotAllowed {
			t.Fatalf("subscription over GET: %d %s", resp.Status, resp.Body)
		}
	})
}
