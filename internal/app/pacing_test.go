package app_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Pacing: the per-agent rate limit (429 rate_limited with Retry-After, nothing written), the
// per-address enrollment limit, and the jittered next_heartbeat_seconds. The test clock
// stands still unless a test moves it, so buckets refill only when it does.

func paceEnv(t *testing.T, dsn string, agent, enroll pacing.Rate) *testenv.Env {
	return testenv.New(t, dsn, func(c *app.Config) { c.AgentRateLimit, c.EnrollRateLimit = agent, enroll })
}

func paceHeartbeats(t *testing.T, env *testenv.Env, admin, assetID string) float64 {
	t.Helper()
	d := env.MustGQL(admin, `query($a: ID!) { asset(id: $a) { heartbeatCount } received: events(filter: {assetId: $a, type: "asset.telemetry.received"}) { totalCount } }`,
		map[string]any{"a": assetID})
	a, _ := d["asset"].(map[string]any)
	n := d["received"].(map[string]any)["totalCount"].(float64)
	if a != nil && a["heartbeatCount"].(float64) != n {
		t.Fatalf("heartbeatCount %v but %v telemetry events", a["heartbeatCount"], n)
	}
	return n
}

func TestAgentRateLimit(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := paceEnv(t, dsn, pacing.Rate{N: 4, Per: time.Minute}, pacing.Rate{})
		fl := env.NewFleet("Chatty")
		ag, admin := fl.Agent, fl.Tenant.AdminToken
		quiet := env.Enroll(env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 1), "quiet", "")

		// The burst: two through REST, two through GraphQL (one bucket per agent).
		for i := range 4 {
			if i%2 == 0 {
				if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("burst-"+strconv.Itoa(i))); r.Status != 200 {
					t.Fatalf("beat %d: %d %s", i, r.Status, r.Body)
				}
				continue
			}
			env.MustGQL(ag.Token, submitMutation, map[string]any{"agentId": ag.ID, "input": toGQL(fullBody("burst-" + strconv.Itoa(i)))})
		}
		before := paceHeartbeats(t, env, admin, ag.AssetID)

		r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("over-rest"))
		if r.Status != http.StatusTooManyRequests || r.ErrorCode() != "rate_limited" {
			t.Fatalf("over the limit (REST): %d %s", r.Status, r.Body)
		}
		// 4 per minute refill one every 15 s.
		if ra := r.Header.Get("Retry-After"); ra != "15" {
			t.Fatalf("Retry-After %q, want 15", ra)
		}
		g := env.GQL(ag.Token, submitMutation, map[string]any{"agentId": ag.ID, "input": toGQL(fullBody("over-gql"))})
		if g.Code() != "RATE_LIMITED" || g.Errors[0].Extensions["retryAfterSeconds"] != float64(15) {
			t.Fatalf("over the limit (GraphQL): %s", g.Raw)
		}
		// A repeat of an accepted heartbeat is refused too, before it is looked up.
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("burst-0")); r.Status != 429 {
			t.Fatalf("duplicate over the limit: %d %s", r.Status, r.Body)
		}
		if after := paceHeartbeats(t, env, admin, ag.AssetID); after != before {
			t.Fatalf("refused heartbeats were written: %v -> %v", before, after)
		}
		// The checks above the rate limit still answer first.
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, `{"hostname": 5}`); r.Status != 400 {
			t.Fatalf("bad body over the limit: %d %s", r.Status, r.Body)
		}
		// Another agent has its own bucket.
		if r := env.Do(http.MethodPost, hbPath(quiet.ID), quiet.Token, fullBody("q1")); r.Status != 200 {
			t.Fatalf("another agent: %d %s", r.Status, r.Body)
		}

		// After the announced wait one more heartbeat fits, and the one refused before is
		// accepted as new (it was never recorded).
		env.Clock.Advance(15 * time.Second)
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("over-rest")); r.Status != 200 || r.JSON["duplicate"] != false {
			t.Fatalf("after the wait: %d %s", r.Status, r.Body)
		}
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("again")); r.Status != 429 {
			t.Fatalf("a second one after a single refill: %d %s", r.Status, r.Body)
		}
		if after := paceHeartbeats(t, env, admin, ag.AssetID); after != before+1 {
			t.Fatalf("%v heartbeats recorded, want %v", after, before+1)
		}
	})
}

func TestEnrollRateLimit(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := paceEnv(t, dsn, pacing.Rate{}, pacing.Rate{N: 3, Per: time.Minute})
		ten := env.Tenant("Rollout")
		site := env.Site(ten, "HQ")
		tok := env.EnrollmentToken(ten, site, nil, 100)
		identities := func() float64 {
			return env.MustGQL(ten.AdminToken, `{ agentIdentities { totalCount } }`, nil)["agentIdentities"].(map[string]any)["totalCount"].(float64)
		}
		enroll := func(token string) *testenv.Response {
			return env.Do(http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": token, "hostname": "h"})
		}
		// Failed attempts count: the limit also slows the guessing of enrollment tokens.
		if r := enroll("opet_guess"); r.Status != 401 {
			t.Fatalf("guess: %d %s", r.Status, r.Body)
		}
		for i := range 2 {
			if r := enroll(tok); r.Status != 201 {
				t.Fatalf("enrollment %d: %d %s", i, r.Status, r.Body)
			}
		}
		r := enroll(tok)
		if r.Status != 429 || r.ErrorCode() != "rate_limited" || r.Header.Get("Retry-After") != "20" {
			t.Fatalf("over the limit: %d %v %s", r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		if n := identities(); n != 2 {
			t.Fatalf("%v identities, want 2", n)
		}
		env.Clock.Advance(20 * time.Second)
		if r := enroll(tok); r.Status != 201 {
			t.Fatalf("after the wait: %d %s", r.Status, r.Body)
		}
	})
}

func TestNextHeartbeatIsJittered(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn) // interval 60 s
		fl := env.NewFleet("Jitter")
		tok := env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 20)
		seen := map[float64]bool{}
		for i := range 20 {
			a := env.Enroll(tok, "j"+strconv.Itoa(i), "")
			var n float64
			if i%2 == 0 {
				r := env.Do(http.MethodPost, hbPath(a.ID), a.Token, map[string]any{"hostname": "h"})
				n = r.JSON["next_heartbeat_seconds"].(float64)
			} else {
				d := env.MustGQL(a.Token, submitMutation, map[string]any{"agentId": a.ID, "input": map[string]any{"hostname": "h"}})
				n = d["submitHeartbeat"].(map[string]any)["nextHeartbeatSeconds"].(float64)
			}
			if n < 24 || n > 96 {
				t.Fatalf("next_heartbeat_seconds %v outside [24, 96] (0.4 to 1.6 intervals)", n)
			}
			seen[n] = true
		}
		// Agents that beat at the same instant are told different waits.
		if len(seen) < 5 {
			t.Fatalf("20 agents at the same instant got only %d distinct waits: %v", len(seen), seen)
		}
	})
}
