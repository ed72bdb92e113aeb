package app_test

import (
	"net/http"
	"testing"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// EnrollmentToken.identities: who used a token, paged, in the caller's tenant only.
func TestEnrollmentTokenIdentities(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("Leaky")
		site := env.Site(ten, "HQ")
		admin := ten.AdminToken
		mint := func() (id, secret string) {
			d := env.MustGQL(admin, `mutation($s: ID!) { createEnrollmentToken(input: {siteId: $s, maxUses: 10}) { token enrollmentToken { id } } }`,
				map[string]any{"s": site})["createEnrollmentToken"].(map[string]any)
			return d["enrollmentToken"].(map[string]any)["id"].(string), d["token"].(string)
		}
		leakedID, leaked := mint()
		otherID, other := mint()
		var want []string
		for _, m := range []string{"m1", "m2", "m3"} {
			want = append(want, env.Enroll(leaked, "host-"+m, m).ID)
		}
		// A re-enrollment of m1 with the same token supersedes the first identity: both show.
		want = append(want, env.Enroll(leaked, "host-m1", "m1").ID)
		otherAgent := env.Enroll(other, "elsewhere", "m9")
		// Another tenant's agents never show.
		foreign := env.NewFleet("Foreign")

		const q = `query($id: ID!, $first: Int, $after: String) { enrollmentToken(id: $id) { id
			identities(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { agentId status machineId } } } } }`
		var got []string
		var after any
		statuses := map[string]string{}
		for pages := 0; ; pages++ {
			d := env.MustGQL(admin, q, map[string]any{"id": leakedID, "first": 3, "after": after})
			conn := d["enrollmentToken"].(map[string]any)["identities"].(map[string]any)
			if conn["totalCount"] != float64(4) {
				t.Fatalf("totalCount %v, want 4", conn["totalCount"])
			}
			for _, e := range conn["edges"].([]any) {
				n := e.(map[string]any)["node"].(map[string]any)
				got = append(got, n["agentId"].(string))
				statuses[n["agentId"].(string)] = n["status"].(string)
			}
			info := conn["pageInfo"].(map[string]any)
			if info["hasNextPage"] != true {
				break
			}
			if pages > 3 {
				t.Fatal("paging does not end")
			}
			after = info["endCursor"]
		}
		sameSet(t, "identities of the leaked token", got, want)
		if len(got) != 4 || statuses[want[0]] != "REVOKED" || statuses[want[3]] != "ENROLLED" {
			t.Fatalf("identities %v with statuses %v", got, statuses)
		}
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("not in agent id order: %v", got)
			}
		}

		// The same field through the listing; a cursor of one token's list is refused for another's.
		d := env.MustGQL(admin, `{ enrollmentTokens { edges { node { id identities { totalCount edges { node { agentId } } } } } } }`, nil)
		for _, e := range d["enrollmentTokens"].(map[string]any)["edges"].([]any) {
			n := e.(map[string]any)["node"].(map[string]any)
			ids := n["identities"].(map[string]any)
			switch n["id"] {
			case leakedID:
				if ids["totalCount"] != float64(4) {
					t.Fatalf("leaked token lists %v", ids["totalCount"])
				}
			case otherID:
				edges := ids["edges"].([]any)
				if len(edges) != 1 || edges[0].(map[string]any)["node"].(map[string]any)["agentId"] != otherAgent.ID {
					t.Fatalf("other token lists %v", edges)
				}
			}
		}
		first := env.MustGQL(admin, q, map[string]any{"id": leakedID, "first": 1})
		cur := first["enrollmentToken"].(map[string]any)["identities"].(map[string]any)["pageInfo"].(map[string]any)["endCursor"]
		if r := env.GQL(admin, q, map[string]any{"id": otherID, "first": 1, "after": cur}); r.Code() != "INVALID_REQUEST" {
			t.Fatalf("a cursor of another token's list: %s", r.Raw)
		}

		// Tenant isolation and roles: another tenant's token is null; a viewer is FORBIDDEN.
		if d := env.MustGQL(foreign.Tenant.AdminToken, q, map[string]any{"id": leakedID}); d["enrollmentToken"] != nil {
			t.Fatalf("another tenant sees the token: %v", d)
		}
		if r := env.GQL(ten.ViewerToken, q, map[string]any{"id": leakedID}); r.Code() != "FORBIDDEN" {
			t.Fatalf("viewer: %s", r.Raw)
		}
		if r := env.GQL(admin, q, map[string]any{"id": leakedID, "first": 501}); r.Code() != "INVALID_REQUEST" {
			t.Fatalf("first: 501: %s", r.Raw)
		}

		// The admin's way out of a leak: revoke the token, then the identities it enrolled.
		env.MustGQL(admin, `mutation($id: ID!) { revokeEnrollmentToken(id: $id) { revokedAt } }`, map[string]any{"id": leakedID})
		for _, id := range want[1:] {
			env.MustGQL(admin, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "leaked enrollment token") { status } }`, map[string]any{"a": id})
		}
		if r := env.Do(http.MethodPost, "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": leaked}); r.Status != 401 {
			t.Fatalf("the revoked token still enrolls: %d", r.Status)
		}
		d = env.MustGQL(admin, `query($id: ID!) { enrollmentToken(id: $id) { identities(first: 10) { edges { node { status } } } } }`, map[string]any{"id": leakedID})
		for _, e := range d["enrollmentToken"].(map[string]any)["identities"].(map[string]any)["edges"].([]any) {
			if s := e.(map[string]any)["node"].(map[string]any)["status"]; s != "REVOKED" {
				t.Fatalf("an identity of the leaked token is %v", s)
			}
		}
	})
}
