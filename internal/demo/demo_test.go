package demo_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/demo"
	"github.com/oneprotect/telemetry/internal/testenv"
)

var tokenLine = regexp.MustCompile(`Admin token:\s+(opu_\S+)`)

// startDemo starts the demo as serve --demo does and returns the admin token it printed.
func startDemo(t *testing.T, env *testenv.Env) (token string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	f, err := demo.Start(ctx, env.App, env.Server.URL, &out)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop = func() { cancel(); f.Wait() }
	t.Cleanup(stop)
	m := tokenLine.FindStringSubmatch(out.String())
	if m == nil || !strings.Contains(out.String(), env.Server.URL+"/playground") || !strings.Contains(out.String(), `"Authorization":"Bearer `+m[1]) {
		t.Fatalf("the banner lacks the token, playground URL or headers:\n%s", out.String())
	}
	return m[1], stop
}

// waitFor polls a GraphQL count until it reaches want (a guard, not a timing assertion).
func waitFor(t *testing.T, env *testenv.Env, token, query string, pick func(map[string]any) float64, want float64) {
	t.Helper()
	var got float64
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = pick(env.MustGQL(token, query, nil)); got == want {
			return
		}
	}
	t.Fatalf("%s: %v, want %v", query, got, want)
}

func TestDemo(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		assets := `{ assets(first: 50) { totalCount edges { node { hostname os { name } ipAddresses site { name } } } } }`
		total := func(d map[string]any) float64 { return d["assets"].(map[string]any)["totalCount"].(float64) }
		active := `{ agentIdentities(filter: {status: ACTIVE}) { totalCount } }`
		countOf := func(d map[string]any) float64 { return d["agentIdentities"].(map[string]any)["totalCount"].(float64) }

		token, stop := startDemo(t, env)
		waitFor(t, env, token, assets, total, demo.AgentCount)
		d := env.MustGQL(token, assets, nil)
		hosts, oses, sites := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, e := range d["assets"].(map[string]any)["edges"].([]any) {
			n := e.(map[string]any)["node"].(map[string]any)
			hosts[n["hostname"].(string)] = true
			oses[n["os"].(map[string]any)["name"].(string)] = true
			sites[n["site"].(map[string]any)["name"].(string)] = true
			if len(n["ipAddresses"].([]any)) == 0 {
				t.Errorf("%v has no IP address", n["hostname"])
			}
		}
		if len(hosts) != demo.AgentCount || len(oses) < 4 || len(sites) != 2 {
			t.Fatalf("fleet: %d hosts, OSes %v, sites %v", len(hosts), oses, sites)
		}
		stop()

		// A restart reuses the tenant and the assets, and prints a new working token.
		token2, _ := startDemo(t, env)
		if token2 == token {
			t.Fatal("the restart printed the same token")
		}
		// Every machine re-enrolls (superseding its old identity) and beats again.
		revoked := `{ agentIdentities(filter: {status: REVOKED}) { totalCount } }`
		waitFor(t, env, token2, revoked, countOf, demo.AgentCount)
		waitFor(t, env, token2, active, countOf, demo.AgentCount)
		if n := total(env.MustGQL(token2, assets, nil)); n != demo.AgentCount {
			t.Fatalf("%v assets after a restart, want %d", n, demo.AgentCount)
		}
		tenants := env.MustGQL(token2, `{ viewer { tenant { slug } } sites { name } }`, nil)
		if len(tenants["sites"].([]any)) != 2 {
			t.Fatalf("sites after a restart: %v", tenants["sites"])
		}
	})
}
