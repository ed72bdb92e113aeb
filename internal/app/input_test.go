package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// Input decoding: NUL, invalid UTF-8 and duplicate keys are refused wherever they appear;
// filters are bounded; errors name a stable field; 404/405 use the envelope; every answer
// carries nosniff; cursors are not malleable; heartbeats are counted on both transports; a
// full disk is 503. Each through REST and GraphQL against a real server, on both databases.

// inputRawREST posts a raw body (bytes as given: invalid UTF-8 stays invalid).
func inputRawREST(env *testenv.Env, path, token, body string) *testenv.Response {
	return env.Do(http.MethodPost, path, token, []byte(body))
}

// inputWantREST checks a 400 invalid_request naming field.
func inputWantREST(t *testing.T, what string, r *testenv.Response, field string) {
	t.Helper()
	e, _ := r.JSON["error"].(map[string]any)
	if r.Status != http.StatusBadRequest || r.ErrorCode() != "invalid_request" || e["field"] != field {
		t.Errorf("%s: want 400 invalid_request field %q, got %d %s", what, field, r.Status, r.Body)
	}
}

// inputWantGQL checks an INVALID_REQUEST naming field (field "" skips the field check).
func inputWantGQL(t *testing.T, what string, r *testenv.GQLResult, field string) {
	t.Helper()
	if r.Code() != "INVALID_REQUEST" || (field != "" && r.Errors[0].Extensions["field"] != field) {
		t.Errorf("%s: want INVALID_REQUEST field %q, got %d %s", what, field, r.Status, r.Raw)
	}
	if r.Status >= 500 {
		t.Errorf("%s: status %d", what, r.Status)
	}
}

// inputNothingWritten checks that the agent never had a heartbeat accepted: its asset does
// not exist yet and its identity is still ENROLLED.
func inputNothingWritten(t *testing.T, env *testenv.Env, f *testenv.Fleet) {
	t.Helper()
	d := env.MustGQL(f.Tenant.ViewerToken, `query($a: ID!, $g: ID!) { asset(id: $a) { id } agentIdentity(agentId: $g) { status lastSeenAt } }`,
		map[string]any{"a": f.Agent.AssetID, "g": f.Agent.ID})
	if d["asset"] != nil {
		t.Errorf("a refused heartbeat wrote the asset: %v", d["asset"])
	}
	id := d["agentIdentity"].(map[string]any)
	if id["status"] != "ENROLLED" || id["lastSeenAt"] != nil {
		t.Errorf("a refused heartbeat changed the identity: %v", id)
	}
}

func inputCount(env *testenv.Env, token, query string) int {
	d := env.MustGQL(token, query, nil)
	for _, v := range d {
		return int(v.(map[string]any)["totalCount"].(float64))
	}
	return -1
}

func TestInputRefusesNULAndInvalidUTF8(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("text")
		hb := hbPath(f.Agent.ID)

		for _, c := range []struct{ name, body, field string }{
			{"NUL escape in hostname", `{"hostname":"web\u0000-01"}`, "hostname"},
			{"raw NUL byte in hostname", "{\"hostname\":\"web\x00-01\"}", "hostname"},
			{"invalid UTF-8 in hostname", "{\"hostname\":\"web\xff-01\"}", "hostname"},
			{"NUL in agent_version", `{"agent_version":"1.0\u0000"}`, "agent_version"},
			{"NUL in heartbeat_id", `{"heartbeat_id":"a\u0000"}`, "heartbeat_id"},
			{"unpaired surrogate in os.name", `{"inventory":{"os":{"name":"\ud800x"}}}`, "inventory.os.name"},
			{"lone low surrogate", `{"inventory":{"os":{"kernel":"\udc00"}}}`, "inventory.os.kernel"},
			{"NUL in an address", `{"inventory":{"ip_addresses":["10.0.0.1\u0000"]}}`, "inventory.ip_addresses"},
			{"NUL in a fact key", `{"inventory":{"facts":{"ro\u0000le":"web"}}}`, "inventory.facts"},
			{"NUL in a fact value", `{"inventory":{"facts":{"role":"w\u0000eb"}}}`, "inventory.facts.role"},
			{"invalid UTF-8 in a fact key", "{\"inventory\":{\"facts\":{\"r\xc3\":\"web\"}}}", "inventory.facts"},
			{"invalid UTF-8 in a fact value", "{\"inventory\":{\"facts\":{\"role\":\"\xed\xa0\x80\"}}}", "inventory.facts.role"},
			{"NUL in an unknown field", `{"future_field":"\u0000"}`, "future_field"},
			{"invalid UTF-8 in a top-level key", "{\"host\xffname\":\"x\"}", "body"},
		} {
			inputWantREST(t, "REST heartbeat, "+c.name, inputRawREST(env, hb, f.Agent.Token, c.body), c.field)
		}

		// GraphQL: variables are checked when the request is decoded; literals in the document
		// (GraphQL's own \u0000 escape) by the service.
		vars := func(input map[string]any) map[string]any {
			return map[string]any{"agentId": f.Agent.ID, "input": input}
		}
		inputWantGQL(t, "GraphQL variable hostname NUL", env.GQL(f.Agent.Token, submitMutation, vars(map[string]any{"hostname": "a\x00b"})), "hostname")
		inputWantGQL(t, "GraphQL variable fact key NUL", env.GQL(f.Agent.Token, submitMutation,
			vars(map[string]any{"inventory": map[string]any{"facts": map[string]any{"k\x00": "v"}}})), "inventory.facts")
		rawVars := func(input string) string {
			return `{"query":` + mustJSONString(submitMutation) + `,"variables":{"agentId":"` + f.Agent.ID + `","input":` + input + `}}`
		}
		for _, c := range []struct{ name, input, field string }{
			{"invalid UTF-8 in hostname", "{\"hostname\":\"a\xffb\"}", "variables.input.hostname"},
			{"unpaired surrogate in a fact value", `{"inventory":{"facts":{"k":"\udbff"}}}`, "variables.input.inventory.facts.k"},
			{"invalid UTF-8 in a fact key", "{\"inventory\":{\"facts\":{\"k\xc0\":\"v\"}}}", "variables.input.inventory.facts"},
		} {
			r := env.Do(http.MethodPost, "/query", f.Agent.Token, rawVars(c.input))
			if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), `"INVALID_REQUEST"`) ||
				!strings.Contains(string(r.Body), `"field":"`+c.field+`"`) {
				t.Errorf("GraphQL variables, %s: want 400 INVALID_REQUEST field %s, got %d %s", c.name, c.field, r.Status, r.Body)
			}
		}
		literal := func(input string) string {
			return `mutation($agentId: ID!) { submitHeartbeat(agentId: $agentId, input: ` + input + `) { accepted } }`
		}
		one := map[string]any{"agentId": f.Agent.ID}
		for _, c := range []struct{ name, input, field string }{
			{"hostname", `{hostname: "web\u0000-01"}`, "hostname"},
			{"agentVersion", `{agentVersion: "\u0000"}`, "agent_version"},
			{"os.arch", `{inventory: {os: {arch: "x\u0000"}}}`, "inventory.os.arch"},
			{"fact key", `{inventory: {facts: {ok: "v", bad: "v\u0000"}}}`, "inventory.facts.bad"},
			{"heartbeatId", `{heartbeatId: "\u0000"}`, "heartbeat_id"},
		} {
			inputWantGQL(t, "GraphQL literal "+c.name, env.GQL(f.Agent.Token, literal(c.input), one), c.field)
		}
		inputNothingWritten(t, env, f)

		// Enrollment: refused before the token is looked at, and no identity is made.
		tok := env.EnrollmentToken(f.Tenant, f.SiteID, nil, 10)
		before := inputCount(env, f.Tenant.ViewerToken, `{ agentIdentities { totalCount } }`)
		for _, c := range []struct{ name, body, field string }{
			{"NUL in hostname", `{"enrollment_token":"` + tok + `","hostname":"h\u0000"}`, "hostname"},
			{"invalid UTF-8 in machine_id", "{\"enrollment_token\":\"" + tok + "\",\"machine_id\":\"m\xfe\"}", "machine_id"},
			{"NUL in agent_version", `{"enrollment_token":"` + tok + `","agent_version":"\u0000"}`, "agent_version"},
			{"NUL in machine_id", `{"enrollment_token":"` + tok + `","machine_id":"id\u0000"}`, "machine_id"},
		} {
			inputWantREST(t, "enroll, "+c.name, inputRawREST(env, "/api/v1/agents/enroll", "", c.body), c.field)
		}
		if after := inputCount(env, f.Tenant.ViewerToken, `{ agentIdentities { totalCount } }`); after != before {
			t.Errorf("refused enrollments made identities: %d -> %d", before, after)
		}

		// Directory and lifecycle mutations, through variables and literals.
		admin := f.Tenant.AdminToken
		sitesBefore := len(env.MustGQL(admin, `{ sites { id } }`, nil)["sites"].([]any))
		inputWantGQL(t, "createSite literal", env.GQL(admin, `mutation { createSite(input: {name: "a\u0000b"}) { id } }`, nil), "name")
		inputWantGQL(t, "createSite variable", env.GQL(admin, `mutation($n: String!) { createSite(input: {name: $n}) { id } }`,
			map[string]any{"n": "a\x00b"}), "name")
		inputWantGQL(t, "createCollector literal", env.GQL(admin, `mutation($s: ID!) { createCollector(input: {siteId: $s, name: "c\u0000"}) { token } }`,
			map[string]any{"s": f.SiteID}), "name")
		if n := len(env.MustGQL(admin, `{ sites { id } }`, nil)["sites"].([]any)); n != sitesBefore {
			t.Errorf("refused createSite made a site: %d -> %d", sitesBefore, n)
		}
		inputWantGQL(t, "revoke reason", env.GQL(admin, `mutation($g: ID!) { revokeAgentIdentity(agentId: $g, reason: "why\u0000") { status } }`,
			map[string]any{"g": f.Agent.ID}), "reason")
		inputNothingWritten(t, env, f) // still ENROLLED: the revoke wrote nothing

		// Filters: NUL, invalid UTF-8 and a huge hostnameContains are INVALID_REQUEST, not INTERNAL.
		viewer := f.Tenant.ViewerToken
		assets := `query($h: String) { assets(filter: {hostnameContains: $h}) { totalCount edges { node { id } } } }`
		inputWantGQL(t, "hostnameContains literal NUL", env.GQL(viewer, `{ assets(filter: {hostnameContains: "a\u0000"}) { totalCount } }`, nil), "hostnameContains")
		inputWantGQL(t, "hostnameContains of 100,000 characters", env.GQL(viewer, assets, map[string]any{"h": strings.Repeat("a", 100_000)}), "hostnameContains")
		inputWantGQL(t, "agentIdentities siteId NUL", env.GQL(viewer, `query($s: ID) { agentIdentities(filter: {siteId: $s}) { totalCount } }`,
			map[string]any{"s": "\x00"}), "siteId")
		inputWantGQL(t, "events type literal NUL", env.GQL(viewer, `{ events(filter: {type: "x\u0000"}) { totalCount } }`, nil), "type")
		if r := env.GQL(viewer, assets, map[string]any{"h": strings.Repeat("a", 255)}); len(r.Errors) > 0 {
			t.Errorf("a hostnameContains of 255 characters is allowed: %s", r.Raw)
		}

		// GET /query: the variables parameter is checked like a POST body.
		q := url.Values{"query": {assets}, "variables": {"{\"h\":\"\xff\"}"}}
		r := env.Do(http.MethodGet, "/query?"+q.Encode(), viewer, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), `"INVALID_REQUEST"`) || !strings.Contains(string(r.Body), `"variables.h"`) {
			t.Errorf("GET /query with invalid UTF-8 in variables: %d %s", r.Status, r.Body)
		}
	})
}

func TestInputRefusesDuplicateKeys(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("dup")
		other := env.NewFleet("dup-other")
		hb := hbPath(f.Agent.ID)

		for _, c := range []struct{ name, body, field string }{
			// The pen test's identity override: last-wins would accept it, first-wins would not.
			{"tenant_id twice", `{"tenant_id":"` + other.Agent.TenantID + `","tenant_id":"` + f.Agent.TenantID + `"}`, "tenant_id"},
			{"hostname twice", `{"hostname":"a","hostname":"b"}`, "hostname"},
			{"the same key, once escaped", `{"hostname":"a","host\u006eame":"b"}`, "hostname"},
			{"nested", `{"inventory":{"os":{"name":"a","version":"1","name":"b"}}}`, "inventory.os.name"},
			{"a fact key", `{"inventory":{"facts":{"k":"1","k":"1"}}}`, "inventory.facts.k"},
			{"inventory twice", `{"inventory":{},"inventory":{}}`, "inventory"},
		} {
			inputWantREST(t, "REST heartbeat, "+c.name, inputRawREST(env, hb, f.Agent.Token, c.body), c.field)
		}
		r := inputRawREST(env, "/api/v1/agents/enroll", "", `{"enrollment_token":"x","enrollment_token":"y"}`)
		inputWantREST(t, "enroll, enrollment_token twice", r, "enrollment_token")

		// GraphQL variables: the body is sent as written.
		body := `{"query":` + mustJSONString(submitMutation) + `,"variables":{"agentId":"` + f.Agent.ID +
			`","input":{"hostname":"a","inventory":{"facts":{"k":"1","k":"2"}}}}}`
		gr := env.Do(http.MethodPost, "/query", f.Agent.Token, body)
		if gr.Status != http.StatusBadRequest || !strings.Contains(string(gr.Body), `"INVALID_REQUEST"`) ||
			!strings.Contains(string(gr.Body), `"variables.input.inventory.facts.k"`) {
			t.Errorf("GraphQL duplicate key in variables: %d %s", gr.Status, gr.Body)
		}
		gr = env.Do(http.MethodPost, "/query", f.Agent.Token, `{"query":"{ viewer { id } }","query":`+mustJSONString(submitMutation)+`}`)
		if gr.Status != http.StatusBadRequest || !strings.Contains(string(gr.Body), `"INVALID_REQUEST"`) {
			t.Errorf("GraphQL body naming query twice: %d %s", gr.Status, gr.Body)
		}
		// Literals: GraphQL's own rule refuses a repeated input field, in a JSON argument too.
		for _, input := range []string{`{hostname: "a", hostname: "b"}`, `{inventory: {facts: {k: "1", k: "2"}}}`} {
			res := env.GQL(f.Agent.Token, `mutation($a: ID!) { submitHeartbeat(agentId: $a, input: `+input+`) { accepted } }`,
				map[string]any{"a": f.Agent.ID})
			if len(res.Errors) == 0 || res.Data["submitHeartbeat"] != nil {
				t.Errorf("GraphQL literal %s was accepted: %s", input, res.Raw)
			}
		}
		inputNothingWritten(t, env, f)
	})
}

func mustJSONString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestInputErrorEnvelopeAndNosniff(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("envelope")
		nosniff := func(what string, r *testenv.Response) {
			t.Helper()
			if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options %q", what, got)
			}
		}
		for _, c := range []struct {
			method, path string
			status       int
			code         string
		}{
			{http.MethodGet, "/no/such/path", 404, "not_found"},
			{http.MethodPost, "/api/v1/agents/" + f.Agent.ID + "/telemetry", 404, "not_found"},
			{http.MethodGet, "/api/v1/agents/enroll", 405, "method_not_allowed"},
			{http.MethodDelete, hbPath(f.Agent.ID), 405, "method_not_allowed"},
			{http.MethodPost, "/healthz", 405, "method_not_allowed"},
		} {
			r := env.Do(c.method, c.path, "", nil)
			what := c.method + " " + c.path
			if r.Status != c.status || r.ErrorCode() != c.code || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Errorf("%s: want %d %s in the JSON envelope, got %d %q %s", what, c.status, c.code, r.Status, r.Header.Get("Content-Type"), r.Body)
			}
			if c.status == 405 && r.Header.Get("Allow") == "" {
				t.Errorf("%s: 405 without Allow", what)
			}
			nosniff(what, r)
		}
		nosniff("healthz", env.Do(http.MethodGet, "/healthz", "", nil))
		nosniff("readyz", env.Do(http.MethodGet, "/readyz", "", nil))
		nosniff("metrics", env.Do(http.MethodGet, "/metrics", "", nil))
		nosniff("playground", env.Do(http.MethodGet, "/playground", "", nil))
		nosniff("heartbeat 200", env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, map[string]any{}))
		nosniff("heartbeat 401", env.Do(http.MethodPost, hbPath(f.Agent.ID), "", map[string]any{}))
		nosniff("POST /query", env.Do(http.MethodPost, "/query", f.Tenant.ViewerToken, map[string]any{"query": "{ viewer { id } }"}))
		nosniff("GET /query", env.Do(http.MethodGet, "/query?query="+url.QueryEscape("{ viewer { id } }"), f.Tenant.ViewerToken, nil))
		nosniff("POST /query 415", env.Do(http.MethodPost, "/query", "", nil))
	})
}

// inputTwiddlePadding changes the last character of a raw base64 part to another one that
// the lenient decoder maps to the same bytes (only padding bits differ), if it has any.
func inputTwiddlePadding(part string) (string, bool) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(part)%4 < 2 {
		return "", false
	}
	i := strings.IndexByte(alphabet, part[len(part)-1])
	return part[:len(part)-1] + string(alphabet[i^1]), true
}

func TestInputCursorIsNotMalleable(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("cursor")
		tok := env.EnrollmentToken(f.Tenant, f.SiteID, nil, 5)
		for _, a := range []*testenv.Agent{f.Agent, env.Enroll(tok, "second", ""), env.Enroll(tok, "third", "")} {
			if r := env.Do(http.MethodPost, hbPath(a.ID), a.Token, map[string]any{}); r.Status != 200 {
				t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
			}
		}
		q := `query($after: String) { assets(first: 1, after: $after) { edges { node { id } } pageInfo { endCursor } } }`
		d := env.MustGQL(f.Tenant.ViewerToken, q, nil)
		cur := d["assets"].(map[string]any)["pageInfo"].(map[string]any)["endCursor"].(string)
		if r := env.GQL(f.Tenant.ViewerToken, q, map[string]any{"after": cur}); len(r.Errors) > 0 {
			t.Fatalf("the cursor itself: %s", r.Raw)
		}
		keyPart, sigPart, _ := strings.Cut(cur, ".")
		var variants []string
		if v, ok := inputTwiddlePadding(sigPart); ok {
			variants = append(variants, keyPart+"."+v)
		}
		if v, ok := inputTwiddlePadding(keyPart); ok {
			variants = append(variants, v+"."+sigPart)
		}
		if len(variants) == 0 {
			t.Fatalf("cursor %q has no padding bits to change", cur)
		}
		variants = append(variants, keyPart[:2]+"\n"+keyPart[2:]+"."+sigPart, keyPart+"."+sigPart[:3]+"\r\n"+sigPart[3:],
			keyPart+"=."+sigPart, keyPart+"."+sigPart+"==")
		for _, v := range variants {
			inputWantGQL(t, fmt.Sprintf("changed cursor %q", v), env.GQL(f.Tenant.ViewerToken, q, map[string]any{"after": v}), "after")
		}
	})
}

func TestInputValidationNamesTheFirstBadField(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("order")
		long := strings.Repeat("x", 300)
		// Every OS field too long, and several bad facts: always the first in the documented order.
		restBody := map[string]any{"inventory": map[string]any{
			"os": map[string]any{"arch": long, "kernel": long, "version": long, "name": long}}}
		gqlInput := map[string]any{"inventory": map[string]any{
			"os": map[string]any{"arch": long, "kernel": long, "version": long, "name": long}}}
		facts := map[string]any{"inventory": map[string]any{"facts": map[string]any{"d": 4, "b": 2, "c": 3, "e": 5, "a": 1}}}
		for i := 0; i < 25; i++ {
			inputWantREST(t, "REST, four bad OS fields", env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, restBody), "inventory.os.name")
			inputWantGQL(t, "GraphQL, four bad OS fields", env.GQL(f.Agent.Token, submitMutation,
				map[string]any{"agentId": f.Agent.ID, "input": gqlInput}), "inventory.os.name")
			inputWantREST(t, "REST, five bad facts", env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, facts), "inventory.facts.a")
			inputWantGQL(t, "GraphQL, five bad facts", env.GQL(f.Agent.Token, submitMutation,
				map[string]any{"agentId": f.Agent.ID, "input": facts}), "inventory.facts.a")
			if t.Failed() {
				return
			}
		}
	})
}

func TestInputHeartbeatsCountedOnBothTransports(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("metrics")
		vars := map[string]any{"agentId": f.Agent.ID, "input": map[string]any{"heartbeatId": "g1"}}
		env.MustGQL(f.Agent.Token, submitMutation, vars)
		env.MustGQL(f.Agent.Token, submitMutation, vars) // a duplicate
		inputWantGQL(t, "bad", env.GQL(f.Agent.Token, submitMutation,
			map[string]any{"agentId": f.Agent.ID, "input": map[string]any{"hostname": strings.Repeat("h", 300)}}), "hostname")
		if r := env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, map[string]any{"heartbeat_id": "r1"}); r.Status != 200 {
			t.Fatalf("REST heartbeat: %d %s", r.Status, r.Body)
		}
		env.Do(http.MethodPost, hbPath(f.Agent.ID), "", map[string]any{})
		m := string(env.Do(http.MethodGet, "/metrics", "", nil).Body)
		for _, want := range []string{
			`oneprotect_heartbeats_total{outcome="accepted",transport="graphql"} 1`,
			`oneprotect_heartbeats_total{outcome="duplicate",transport="graphql"} 1`,
			`oneprotect_heartbeats_total{outcome="invalid_request",transport="graphql"} 1`,
			`oneprotect_heartbeats_total{outcome="accepted",transport="rest"} 1`,
			`oneprotect_heartbeats_total{outcome="unauthenticated",transport="rest"} 1`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s; it has:\n%s", want, inputGrep(m, "oneprotect_heartbeats_total"))
			}
		}
	})
}

func inputGrep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A full disk, made real with SQLite's max_page_count (the same SQLITE_FULL a full file
// system gives): heartbeats are 503 unavailable with Retry-After on both transports, /readyz
// is 503, nothing acknowledged is lost, and service comes back when there is room again.
// PostgreSQL's disk_full is mapped the same way (internal/store, errors_test.go): filling a
// PostgreSQL disk needs a file system of its own, which the tests do not have.
func TestInputFullDiskIsUnavailable(t *testing.T) {
	env := testenv.New(t, testenv.NewSQLite(t))
	f := env.NewFleet("full")
	ctx := context.Background()
	setMax := func(n int) {
		t.Helper()
		if _, err := env.App.Store.W.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n)); err != nil {
			t.Fatal(err)
		}
	}
	big := func(i int) map[string]any {
		facts := map[string]any{}
		for k := 0; k < 64; k++ {
			facts[fmt.Sprintf("f%02d", k)] = fmt.Sprintf("%04d-%02d-%s", i, k, strings.Repeat(testenv.Unique(), 100))
		}
		return map[string]any{"heartbeat_id": fmt.Sprintf("big-%d", i), "inventory": map[string]any{"facts": facts}}
	}
	if r := env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, big(0)); r.Status != 200 {
		t.Fatalf("first heartbeat: %d %s", r.Status, r.Body)
	}
	accepted := 1
	setMax(1) // SQLite keeps the current size: from now on the file cannot grow
	var full *testenv.Response
	for i := 1; i <= 200 && full == nil; i++ {
		r := env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, big(i))
		switch r.Status {
		case 200:
			accepted++
		default:
			full = r
		}
	}
	if full == nil {
		t.Fatal("the database never filled up")
	}
	if full.Status != http.StatusServiceUnavailable || full.ErrorCode() != "unavailable" || full.Header.Get("Retry-After") == "" {
		t.Fatalf("heartbeat on a full database: want 503 unavailable with Retry-After, got %d %v %s", full.Status, full.Header, full.Body)
	}
	g := env.GQL(f.Agent.Token, submitMutation, map[string]any{"agentId": f.Agent.ID, "input": toGQL(big(1000))})
	if g.Code() != "UNAVAILABLE" {
		t.Errorf("GraphQL heartbeat on a full database: %s", g.Raw)
	}
	if r := env.Do(http.MethodGet, "/readyz", "", nil); r.Status != http.StatusServiceUnavailable {
		t.Errorf("/readyz while writes fail: %d %s", r.Status, r.Body)
	}

	setMax(1 << 30) // space is back
	if r := env.Do(http.MethodPost, hbPath(f.Agent.ID), f.Agent.Token, big(2000)); r.Status != 200 {
		t.Fatalf("heartbeat once there is room: %d %s", r.Status, r.Body)
	}
	accepted++
	if r := env.Do(http.MethodGet, "/readyz", "", nil); r.Status != 200 {
		t.Errorf("/readyz once writes succeed: %d %s", r.Status, r.Body)
	}
	d := env.MustGQL(f.Tenant.ViewerToken, `query($a: ID!) { asset(id: $a) { heartbeatCount } }`, map[string]any{"a": f.Agent.AssetID})
	if n := int(d["asset"].(map[string]any)["heartbeatCount"].(float64)); n != accepted {
		t.Errorf("heartbeatCount %d, want the %d acknowledged", n, accepted)
	}
	var check string
	if err := env.App.Store.R.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check: %q %v", check, err)
	}
}
