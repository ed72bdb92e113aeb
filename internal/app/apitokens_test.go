package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// The lifecycle of user API tokens: apiTokens, createApiToken, revokeApiToken.

const (
	viewerIDQuery    = `{ viewer { id kind } }`
	apiTokensQuery   = `query($p: ID) { apiTokens(principalId: $p) { id prefix principal { id name } createdAt expiresAt lastUsedAt revokedAt } }`
	createTokenMut   = `mutation($p: ID!, $ttl: Int) { createApiToken(input: {principalId: $p, ttlSeconds: $ttl}) { token expiresAt apiToken { id prefix principal { id } expiresAt revokedAt } } }`
	revokeTokenMut   = `mutation($id: ID!) { revokeApiToken(id: $id) { id revokedAt } }`
	revocationBound  = time.Second // a revoked token is refused within this on every replica
	revocationMargin = 100 * time.Millisecond
)

func principalID(t *testing.T, env *testenv.Env, token string) string {
	t.Helper()
	return env.MustGQL(token, viewerIDQuery, nil)["viewer"].(map[string]any)["id"].(string)
}

// mint creates a token for principal through GraphQL and returns its id and secret.
func mint(t *testing.T, env *testenv.Env, admin, principal string, ttl any) (id, secret string) {
	t.Helper()
	d := env.MustGQL(admin, createTokenMut, map[string]any{"p": principal, "ttl": ttl})["createApiToken"].(map[string]any)
	return d["apiToken"].(map[string]any)["id"].(string), d["token"].(string)
}

// authenticates reports whether token is accepted (viewer answers) rather than refused.
func authenticates(t *testing.T, env *testenv.Env, token string) bool {
	t.Helper()
	r := env.GQL(token, viewerIDQuery, nil)
	switch r.Code() {
	case "":
		return true
	case "UNAUTHENTICATED":
		return false
	}
	t.Fatalf("viewer answered %s", r.Raw)
	return false
}

// closedWith reads until the connection ends and returns its close status.
func closedWith(c *wsClient) websocket.StatusCode {
	for {
		_, err := c.read(generous)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func TestAPITokenLifecycle(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		replica := testenv.New(t, dsn) // a second replica on the same database
		a, b := env.NewFleet("a"), env.NewFleet("b")
		viewer := principalID(t, env, a.Tenant.ViewerToken)

		t.Run("mint, use, list without the secret", func(t *testing.T) {
			id, secret := mint(t, env, a.Tenant.AdminToken, viewer, 3600)
			if !strings.HasPrefix(secret, "opu_") || !authenticates(t, env, secret) {
				t.Fatalf("minted token %q does not authenticate", secret)
			}
			if got := principalID(t, env, secret); got != viewer {
				t.Fatalf("minted token authenticates %s, want the viewer %s", got, viewer)
			}
			r := env.GQL(a.Tenant.AdminToken, apiTokensQuery, map[string]any{"p": viewer})
			if len(r.Errors) > 0 || strings.Contains(string(r.Raw), secret) || strings.Contains(string(r.Raw), secret[4:]) {
				t.Fatalf("apiTokens: %s", r.Raw)
			}
			var found map[string]any
			for _, tok := range r.Data["apiTokens"].([]any) {
				if m := tok.(map[string]any); m["id"] == id {
					found = m
				}
			}
			if found == nil || !strings.HasPrefix(secret, found["prefix"].(string)) || found["expiresAt"] == nil ||
				found["lastUsedAt"] == nil || found["revokedAt"] != nil || found["principal"].(map[string]any)["id"] != viewer {
				t.Fatalf("listing of the minted token: %v", found)
			}
			// The whole list holds the tenant's user tokens only: its admin's and viewer's,
			// not the agent's service account, nor anything of tenant B.
			all := env.MustGQL(a.Tenant.AdminToken, apiTokensQuery, nil)["apiTokens"].([]any)
			if len(all) != 3 {
				t.Fatalf("apiTokens lists %d tokens, want 3 (admin, viewer, minted): %v", len(all), all)
			}
		})

		t.Run("who may mint and revoke what", func(t *testing.T) {
			agentPrincipal := principalID(t, env, a.Agent.Token)
			otherUser := principalID(t, env, b.Tenant.ViewerToken)
			for name, p := range map[string]string{"another tenant's user": otherUser,
				"a service account": agentPrincipal, "nobody": "00000000-0000-0000-0000-000000000000", "not an id": "x"} {
				r := env.GQL(a.Tenant.AdminToken, createTokenMut, map[string]any{"p": p})
				if r.Code() != "NOT_FOUND" {
					t.Errorf("createApiToken for %s: %s", name, r.Raw)
				}
			}
			if r := env.GQL(a.Tenant.ViewerToken, createTokenMut, map[string]any{"p": viewer}); r.Code() != "FORBIDDEN" {
				t.Errorf("createApiToken by a VIEWER: %s", r.Raw)
			}
			for _, q := range []string{apiTokensQuery, revokeTokenMut} {
				if r := env.GQL(a.Tenant.ViewerToken, q, map[string]any{"id": "x"}); r.Code() != "FORBIDDEN" {
					t.Errorf("VIEWER: %s", r.Raw)
				}
				if r := env.GQL(a.Agent.Token, q, map[string]any{"id": "x"}); r.Code() != "FORBIDDEN" {
					t.Errorf("service account: %s", r.Raw)
				}
			}
			for _, ttl := range []any{0, -5, 200_000_000} {
				if r := env.GQL(a.Tenant.AdminToken, createTokenMut, map[string]any{"p": viewer, "ttl": ttl}); r.Code() != "INVALID_REQUEST" {
					t.Errorf("ttlSeconds %v: %s", ttl, r.Raw)
				}
			}
			// Tenant B's admin cannot revoke, nor see, tenant A's tokens.
			id, secret := mint(t, env, a.Tenant.AdminToken, viewer, nil)
			if r := env.GQL(b.Tenant.AdminToken, revokeTokenMut, map[string]any{"id": id}); r.Code() != "NOT_FOUND" {
				t.Errorf("revoking another tenant's token: %s", r.Raw)
			}
			if r := env.GQL(b.Tenant.AdminToken, apiTokensQuery, nil); len(r.Errors) > 0 || strings.Contains(string(r.Raw), id) {
				t.Errorf("tenant B lists tenant A's token: %s", r.Raw)
			}
			if !authenticates(t, env, secret) {
				t.Error("a foreign revocation attempt revoked the token")
			}
		})

		t.Run("revoked: refused at once here, within a second on another replica", func(t *testing.T) {
			id, secret := mint(t, env, a.Tenant.AdminToken, viewer, nil)
			// Both replicas have the token cached.
			if !authenticates(t, env, secret) || !authenticates(t, replica, secret) {
				t.Fatal("fresh token refused")
			}
			sub := connect(t, replica, secret)
			sub.subscribe("1", nil)
			d := env.MustGQL(a.Tenant.AdminToken, revokeTokenMut, map[string]any{"id": id})["revokeApiToken"].(map[string]any)
			revoked := time.Now()
			if d["id"] != id || d["revokedAt"] == nil {
				t.Fatalf("revokeApiToken: %v", d)
			}
			if authenticates(t, env, secret) {
				t.Error("the replica that revoked the token still accepts it")
			}
			time.Sleep(time.Until(revoked.Add(revocationBound - revocationMargin)))
			if authenticates(t, replica, secret) {
				t.Errorf("another replica still accepts the token %v after its revocation", time.Since(revoked))
			}
			if code := closedWith(sub); code != 4403 {
				t.Errorf("the revoked token's subscription closed with %d, want 4403", code)
			}
			// REST refuses it too, and revoking again changes nothing.
			if r := env.Do(http.MethodPost, "/query", secret, map[string]any{"query": viewerIDQuery}); r.Status != 200 ||
				!strings.Contains(string(r.Body), "UNAUTHENTICATED") {
				t.Errorf("revoked token on /query: %d %s", r.Status, r.Body)
			}
			again := env.MustGQL(a.Tenant.AdminToken, revokeTokenMut, map[string]any{"id": id})["revokeApiToken"].(map[string]any)
			if again["revokedAt"] != d["revokedAt"] {
				t.Errorf("a second revocation moved revokedAt: %v -> %v", d["revokedAt"], again["revokedAt"])
			}
		})

		t.Run("expired: refused, and its subscription closed", func(t *testing.T) {
			_, secret := mint(t, env, a.Tenant.AdminToken, viewer, 60)
			if !authenticates(t, env, secret) {
				t.Fatal("fresh token refused")
			}
			sub := connect(t, env, secret)
			sub.subscribe("1", nil)
			env.Clock.Advance(61 * time.Second)
			if authenticates(t, env, secret) {
				t.Error("an expired token still authenticates")
			}
			if code := closedWith(sub); code != 4403 {
				t.Errorf("the expired token's subscription closed with %d, want 4403", code)
			}
		})
	})
}
