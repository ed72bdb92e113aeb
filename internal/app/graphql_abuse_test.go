package app_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// GraphQL abuse found by the penetration test (issue 11): counts priced as one field,
// schema names leaked with introspection off, refused introspection logged as an internal
// error, undecodable bodies echoed back.

func TestCountsAndAggregatesArePriced(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env, stmts := countingEnv(t, dsn)
		f := env.NewFleet("Priced")
		viewer := f.Tenant.ViewerToken
		env.MustGQL(viewer, `{ viewer { id } }`, nil) // the token is cached from here on

		for name, q := range map[string]string{
			"480 counts":         aliased(480, "events(first: 0) { totalCount }"),
			"480 asset counts":   aliased(480, "assets(first: 1) { totalCount }"),
			"30 summaries":       aliased(30, "fleetSummary { totalAssets }"),
			"counts in fragment": `{ ...C } fragment C on Query ` + aliased(480, "events(first: 0) { totalCount }"),
		} {
			var r *testenv.GQLResult
			n := stmts.statements(func() { r = env.GQL(viewer, q, nil) })
			if r.Code() != "COMPLEXITY_LIMIT_EXCEEDED" || r.Data != nil {
				t.Errorf("%s: %s", name, truncate(r.Raw))
			}
			if n != 0 {
				t.Errorf("%s: %d statements ran for a refused operation", name, n)
			}
		}
		// A dashboard's counts and a full page still fit.
		env.MustGQL(viewer, `{ a: assets(first: 500) { totalCount pageInfo { hasNextPage endCursor }
		    edges { node { id hostname site { id } agent { agentId status } } } }
		  agentIdentities(first: 100) { totalCount } events(first: 50) { totalCount edges { node { id } } }
		  fleetSummary { totalAssets online offline identitiesByStatus { status count } } }`, nil)
		env.MustGQL(viewer, `query($id: ID!) { asset(id: $id) { events(first: 50) { totalCount } } }`,
			map[string]any{"id": f.Agent.AssetID})
	})
}

// aliased is an operation of n aliases of field.
func aliased(n int, field string) string {
	var b strings.Builder
	b.WriteString("{ ")
	for i := range n {
		fmt.Fprintf(&b, "a%d: %s ", i, field)
	}
	return b.String() + "}"
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// logBuffer collects the server's log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// schemaNames are names of the schema a client learns nothing of with introspection off.
var schemaNames = regexp.MustCompile(`\b(Query|Mutation|Subscription|AssetFilter|AgentIdentityFilter|EventFilter|AgentStatus|` +
	`CreateSiteInput|AssetConnection|AssetEdge|Asset|Site|Int|String|Boolean|ID|hostnameContains|first|name|id|viewer|` +
	`ACTIVE|ENROLLED|STALE|REVOKED)\b`)

func TestIntrospectionOffNamesNothing(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		logs := &logBuffer{}
		env := testenv.New(t, dsn, func(c *app.Config) {
			c.Introspection = false
			c.Log = slog.New(slog.NewTextHandler(logs, nil))
		})
		admin := env.Tenant("Closed").AdminToken

		t.Run("refused introspection is a client error, not logged", func(t *testing.T) {
			for _, q := range []string{`{ __schema { types { name } } }`, `{ __type(name: "Asset") { name } }`,
				`{ ...F } fragment F on Query { __schema { queryType { name } } }`, `{ viewer { id } ... on Query { __type(name: "Site") { name } } }`} {
				r := env.GQL(admin, q, nil)
				if r.Code() != "GRAPHQL_VALIDATION_FAILED" || r.Data != nil {
					t.Errorf("%s: %s", q, r.Raw)
				}
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("refused introspection logged an error:\n%s", logs.String())
			}
			// __typename is not introspection of the schema.
			env.MustGQL(admin, `{ __typename viewer { __typename } }`, nil)
		})

		t.Run("no validation message names the schema", func(t *testing.T) {
			for _, c := range []struct {
				q    string
				vars map[string]any
			}{
				{`{ assets(filter: {hostnameContain: "x"}) { totalCount } }`, nil},
				{`{ agentIdentities(filter: {status: ACTIV}) { totalCount } }`, nil},
				{`{ agentIdentities(filter: {status: "ACTIVE"}) { totalCount } }`, nil},
				{`query($f: AssetFilte) { assets(filter: $f) { totalCount } }`, nil},
				{`query($f: String) { assets(filter: $f) { totalCount } }`, nil},
				{`query($f: AgentIdentityFilter) { agentIdentities(filter: $f) { totalCount } }`, map[string]any{"f": map[string]any{"status": "ACTIV"}}},
				{`query($f: AgentIdentityFilter) { agentIdentities(filter: $f) { totalCount } }`, map[string]any{"f": "x"}},
				{`{ assets(frist: 1) { totalCount } }`, nil},
				{`{ assets { totalCount { x } } }`, nil},
				{`{ assets { edges } }`, nil},
				{`{ asset(id: "x") { ... on Sit { id } } }`, nil},
				{`{ asset { hostname } }`, nil},
				{`{ assets(first: "x") { totalCount } }`, nil},
				{`{ viewr { id } }`, nil},
				{`{ sites { nme } }`, nil},
				{`mutation { createSite(input: {nam: "x"}) { id } }`, nil},
				{`subscription { assetUpdatd { id } }`, nil},
				{`{ assets(filter: {online: 3}) { totalCount } }`, nil},
			} {
				r := env.GQL(admin, c.q, c.vars)
				if r.Code() != "GRAPHQL_VALIDATION_FAILED" {
					t.Errorf("%s: %s", c.q, r.Raw)
					continue
				}
				var msgs []string
				for _, e := range r.Errors {
					msgs = append(msgs, e.Message)
				}
				text := strings.Join(msgs, " | ")
				for _, name := range schemaNames.FindAllString(text, -1) {
					if !regexp.MustCompile(`\b` + name + `\b`).MatchString(c.q) {
						t.Errorf("%s: the answer names %q: %s", c.q, name, text)
					}
				}
				if strings.Contains(text, "Did you mean") {
					t.Errorf("%s: a suggestion: %s", c.q, text)
				}
			}
		})
	})
}

func TestUndecodableQueryBodies(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		admin := env.Tenant("Bodies").AdminToken
		for _, body := range []string{strings.Repeat("<", 500_000), `[]`, `"x"`, `{"query": 5}`,
			`{"query": "{ viewer { id } }", "variables": []}`, `{"query": "{ viewer { id } }", "extensions": 3}`, `{`} {
			r := env.Do(http.MethodPost, "/query", admin, body, "Content-Type", "application/json")
			if r.Status != http.StatusBadRequest || len(r.Body) > 300 || bytes.Contains(r.Body, []byte("RawParams")) ||
				bytes.Contains(r.Body, []byte("Go ")) || !bytes.Contains(r.Body, []byte(`"INVALID_REQUEST"`)) {
				t.Errorf("body %.40q: %d %s", body, r.Status, truncate(r.Body))
			}
		}
	})
}
