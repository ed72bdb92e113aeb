package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Agent credential rotation and maximum age, through REST and GraphQL, on both databases,
// with the test clock standing in for time.

func credRotatePath(agentID string) string {
	return "/api/v1/agents/" + url.PathEscape(agentID) + "/credentials/rotate"
}

const credSubmit = `mutation($a: ID!) { submitHeartbeat(agentId: $a, input: {hostname: "h"}) { accepted nextHeartbeatSeconds credentialExpiresAt } }`

// credBeat sends one heartbeat with token through REST and one through GraphQL and returns
// the REST status and code and the GraphQL code.
func credBeat(env *testenv.Env, agentID, token string) (int, string, string) {
	env.T.Helper()
	r := env.Do(http.MethodPost, hbPath(agentID), token, map[string]any{"hostname": "h"})
	g := env.GQL(token, credSubmit, map[string]any{"a": agentID})
	return r.Status, r.ErrorCode(), g.Code()
}

func credWantBeat(t *testing.T, env *testenv.Env, what, agentID, token string, status int, code string) {
	t.Helper()
	st, rc, gc := credBeat(env, agentID, token)
	if st != status || rc != code || gc != strings.ToUpper(code) {
		t.Fatalf("%s: REST %d %q, GraphQL %q; want %d %q", what, st, rc, gc, status, code)
	}
}

func credRotate(t *testing.T, env *testenv.Env, agentID, token string) *testenv.Response {
	t.Helper()
	return env.Do(http.MethodPost, credRotatePath(agentID), token, nil)
}

func credTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("not a time: %v", v)
	}
	return tm
}

func TestAgentCredentialRotation(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.AgentCredentialGrace = 10 * time.Minute })
		fl := env.NewFleet("Rotor")
		ag, admin := fl.Agent, fl.Tenant.AdminToken
		old := ag.Token
		credWantBeat(t, env, "before", ag.ID, old, 200, "")

		r := credRotate(t, env, ag.ID, old)
		if r.Status != 200 {
			t.Fatalf("rotate: %d %s", r.Status, r.Body)
		}
		fresh, _ := r.JSON["token"].(string)
		if !strings.HasPrefix(fresh, "opsa_") || fresh == old {
			t.Fatalf("rotate answered token %q", fresh)
		}
		if v, ok := r.JSON["expires_at"]; !ok || v != nil {
			t.Fatalf("expires_at = %v; without a maximum age the new token never expires (null)", v)
		}
		if got := credTime(t, r.JSON["previous_token_expires_at"]); !got.Equal(env.Clock.Now().Add(10 * time.Minute)) {
			t.Fatalf("previous_token_expires_at %v; want now + grace", got)
		}

		// Both tokens work during the grace period; the old one's answer says when it ends.
		credWantBeat(t, env, "new token", ag.ID, fresh, 200, "")
		hb := env.Do(http.MethodPost, hbPath(ag.ID), old, map[string]any{"hostname": "h"})
		if hb.Status != 200 || !credTime(t, hb.JSON["credential_expires_at"]).Equal(env.Clock.Now().Add(10*time.Minute)) {
			t.Fatalf("old token within the grace period: %d %s", hb.Status, hb.Body)
		}
		if hb := env.Do(http.MethodPost, hbPath(ag.ID), fresh, map[string]any{"hostname": "h"}); hb.JSON["credential_expires_at"] != nil {
			t.Fatalf("the new token reports an expiry: %s", hb.Body)
		}
		env.Clock.Advance(9 * time.Minute)
		credWantBeat(t, env, "old token, 9 minutes on", ag.ID, old, 200, "")

		// Past the grace period the old token is no token at all, on every path.
		env.Clock.Advance(time.Minute)
		credWantBeat(t, env, "old token after the grace period", ag.ID, old, 401, "unauthenticated")
		if r := credRotate(t, env, ag.ID, old); r.Status != 401 || r.ErrorCode() != "unauthenticated" {
			t.Fatalf("rotation with the expired old token: %d %s", r.Status, r.Body)
		}
		credWantBeat(t, env, "new token after the grace period", ag.ID, fresh, 200, "")

		// Each rotation is an audit event naming the actor and the tokens by id and prefix,
		// never the secret.
		evs := enrEvents(env, admin, ag.ID, "agent.credential.rotated")
		if len(evs) != 1 {
			t.Fatalf("%d rotation events, want 1", len(evs))
		}
		p := enrPayload(evs[0])
		if p["actor_kind"] != "SERVICE_ACCOUNT" || p["token_prefix"] != fresh[:11] || p["grace_seconds"] != float64(600) ||
			p["previous_token_id"] == nil || evs[0]["assetId"] != ag.AssetID {
			t.Fatalf("rotation event: %v", evs[0])
		}
		if raw, _ := json.Marshal(evs[0]); strings.Contains(string(raw), fresh) || strings.Contains(string(raw), old) || p["token_id"] == nil {
			t.Fatalf("the rotation event carries a secret or no token id: %s", raw)
		}

		// A second rotation supersedes the first new token too, and expired rows are pruned.
		r2 := credRotate(t, env, ag.ID, fresh)
		if r2.Status != 200 {
			t.Fatalf("second rotation: %d %s", r2.Status, r2.Body)
		}
		third := r2.JSON["token"].(string)
		env.Clock.Advance(11 * time.Minute)
		credWantBeat(t, env, "second token after its grace", ag.ID, fresh, 401, "unauthenticated")
		credWantBeat(t, env, "third token", ag.ID, third, 200, "")
		if n := len(enrEvents(env, admin, ag.ID, "agent.credential.rotated")); n != 2 {
			t.Fatalf("%d rotation events, want 2", n)
		}
	})
}

func TestAgentCredentialRotationRefusals(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		fl := env.NewFleet("Refuse")
		ag, admin := fl.Agent, fl.Tenant.AdminToken
		site2 := env.Site(fl.Tenant, "Branch")
		colID, colToken := env.Collector(fl.Tenant, site2, "relay")
		bound := env.Enroll(env.EnrollmentToken(fl.Tenant, site2, &colID, 5), "bound", "")
		other := env.Enroll(env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 5), "other", "")
		revoked := env.Enroll(env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 5), "revoked", "")
		env.MustGQL(admin, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": revoked.ID})
		foreign := env.NewFleet("Foreign").Agent

		events := func() float64 {
			return env.MustGQL(admin, `{ events { totalCount } }`, nil)["events"].(map[string]any)["totalCount"].(float64)
		}
		before := events()
		for _, tc := range []struct {
			name, agentID, token string
			status               int
			code                 string
		}{
			{"no token", ag.ID, "", 401, "unauthenticated"},
			{"a bad token", ag.ID, "opsa_nope", 401, "unauthenticated"},
			{"a user token", ag.ID, admin, 403, "service_account_required"},
			{"a malformed agent id", "not-an-id", ag.Token, 401, "unknown_agent"},
			{"an unknown agent", "01a230fe-6399-7d35-a7cf-4bf4425b53aa", ag.Token, 401, "unknown_agent"},
			{"another tenant's agent", foreign.ID, ag.Token, 401, "unknown_agent"},
			{"another agent of the tenant", other.ID, ag.Token, 403, "actor_mismatch"},
			{"the agent's collector", bound.ID, colToken, 403, "actor_mismatch"},
			{"a revoked identity", revoked.ID, revoked.Token, 403, "agent_revoked"},
		} {
			r := credRotate(t, env, tc.agentID, tc.token)
			if r.Status != tc.status || r.ErrorCode() != tc.code {
				t.Errorf("%s: %d %s; want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
			}
			if r.Header.Get("X-Content-Type-Options") != "nosniff" && r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s: not a JSON error answer", tc.name)
			}
		}
		if after := events(); after != before {
			t.Fatalf("refused rotations wrote %v events", after-before)
		}
		// Every token still works as before.
		credWantBeat(t, env, "agent", ag.ID, ag.Token, 200, "")
		credWantBeat(t, env, "other", other.ID, other.Token, 200, "")
	})
}

func TestAgentCredentialMaxAge(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const maxAge = 30 * 24 * time.Hour
		env := testenv.New(t, dsn, func(c *app.Config) {
			c.AgentCredentialMaxAge = maxAge
			c.AgentCredentialGrace = time.Hour
			c.StaleAfter = 365 * 24 * time.Hour
		})
		fl := env.NewFleet("Aging")
		ag := fl.Agent
		issued := env.Clock.Now()

		// The answer advertises when the token reaches its maximum age, on both transports.
		hb := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, map[string]any{"hostname": "h"})
		if hb.Status != 200 || !credTime(t, hb.JSON["credential_expires_at"]).Equal(issued.Add(maxAge)) {
			t.Fatalf("heartbeat: %d %s; want credential_expires_at = issued + max age", hb.Status, hb.Body)
		}
		g := env.MustGQL(ag.Token, credSubmit, map[string]any{"a": ag.ID})["submitHeartbeat"].(map[string]any)
		if !credTime(t, g["credentialExpiresAt"]).Equal(issued.Add(maxAge)) {
			t.Fatalf("GraphQL credentialExpiresAt %v", g["credentialExpiresAt"])
		}

		env.Clock.Advance(maxAge - time.Second)
		credWantBeat(t, env, "just under the maximum age", ag.ID, ag.Token, 200, "")
		env.Clock.Advance(time.Second)
		count := func() float64 {
			d := env.MustGQL(fl.Tenant.AdminToken, `query($a: ID!) { asset(id: $a) { heartbeatCount } }`, map[string]any{"a": ag.AssetID})
			return d["asset"].(map[string]any)["heartbeatCount"].(float64)
		}
		n := count()
		credWantBeat(t, env, "at the maximum age", ag.ID, ag.Token, 401, "credential_expired")
		r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, map[string]any{"hostname": "h"})
		if msg := r.JSON["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "rotate") {
			t.Fatalf("the refusal does not tell the agent to rotate: %q", msg)
		}
		if count() != n {
			t.Fatal("a refused heartbeat was counted")
		}

		// The over-age token may still rotate (its identity is live); the new one works and
		// has a full lifetime, and the old one stays refused.
		rot := credRotate(t, env, ag.ID, ag.Token)
		if rot.Status != 200 || !credTime(t, rot.JSON["expires_at"]).Equal(env.Clock.Now().Add(maxAge)) {
			t.Fatalf("rotate an over-age token: %d %s", rot.Status, rot.Body)
		}
		fresh := rot.JSON["token"].(string)
		credWantBeat(t, env, "the rotated token", ag.ID, fresh, 200, "")
		credWantBeat(t, env, "the over-age token after rotating", ag.ID, ag.Token, 401, "credential_expired")
		// Collectors and users have no maximum age.
		if d := env.GQL(fl.Tenant.AdminToken, `{ viewer { id } }`, nil); d.Code() != "" {
			t.Fatalf("a user token was aged out: %s", d.Raw)
		}
	})
}

// With no grace period the old token is refused at once, although it was just cached.
func TestAgentCredentialRotationWithoutGrace(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.AgentCredentialGrace = 0 })
		ag := env.NewFleet("NoGrace").Agent
		credWantBeat(t, env, "before", ag.ID, ag.Token, 200, "") // the token is now cached
		r := credRotate(t, env, ag.ID, ag.Token)
		if r.Status != 200 || !credTime(t, r.JSON["previous_token_expires_at"]).Equal(env.Clock.Now()) {
			t.Fatalf("rotate: %d %s", r.Status, r.Body)
		}
		credWantBeat(t, env, "old token", ag.ID, ag.Token, 401, "unauthenticated")
		credWantBeat(t, env, "new token", ag.ID, r.JSON["token"].(string), 200, "")
	})
}
