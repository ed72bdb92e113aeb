package loadgen_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/loadgen"
	"github.com/oneprotect/telemetry/internal/testenv"
)

func TestLoadgen(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("Load")
		site := env.Site(ten, "HQ")
		const agents = 20
		token := env.EnrollmentToken(ten, site, nil, agents)
		dir := t.TempDir()
		agentsFile, wrkFile := filepath.Join(dir, "agents.json"), filepath.Join(dir, "heartbeats.lua")

		var accepted uint64
		for _, graphql := range []bool{false, true} {
			// The GraphQL run reuses the REST run's agents from the file: the enrollment
			// token allows only 20 uses, so a second enrollment would fail.
			sum, err := loadgen.Run(context.Background(), loadgen.Config{Server: env.Server.URL, EnrollmentToken: token,
				Agents: agents, Concurrency: 4, Duration: 2 * time.Second, GraphQL: graphql,
				AgentsFile: agentsFile, WrkLua: wrkFile})
			if err != nil {
				t.Fatalf("graphql=%v: %v", graphql, err)
			}
			t.Logf("graphql=%v:\n%s", graphql, sum.Format())
			if sum.Requests == 0 || sum.Accepted != sum.Requests || sum.Errors != 0 {
				t.Fatalf("graphql=%v: %d requests, %d accepted, %d errors", graphql, sum.Requests, sum.Accepted, sum.Errors)
			}
			if len(sum.StatusCounts) != 1 || sum.StatusCounts["200"] != sum.Requests || len(sum.GraphQLErrorCodes) != 0 {
				t.Fatalf("graphql=%v: status %v, GraphQL errors %v", graphql, sum.StatusCounts, sum.GraphQLErrorCodes)
			}
			if wantReuse := graphql; sum.ReusedAgentsFile != wantReuse || (!graphql && sum.Enrolled != agents) {
				t.Fatalf("graphql=%v: reused %v, enrolled %d", graphql, sum.ReusedAgentsFile, sum.Enrolled)
			}
			if sum.Latency.P50 <= 0 || sum.Latency.P50 > sum.Latency.P99 || sum.Latency.P99 > sum.Latency.Max*1.02 {
				t.Fatalf("graphql=%v: latency %+v", graphql, sum.Latency)
			}
			accepted += sum.Accepted
		}

		d := env.MustGQL(ten.AdminToken, `{ assets(first: 50) { totalCount edges { node { heartbeatCount } } } }`, nil)
		conn := d["assets"].(map[string]any)
		var total float64
		for _, e := range conn["edges"].([]any) {
			total += e.(map[string]any)["node"].(map[string]any)["heartbeatCount"].(float64)
		}
		if conn["totalCount"].(float64) != agents || uint64(total) != accepted {
			t.Fatalf("%v assets with %v heartbeats, want %d with %d (every accepted heartbeat counted once)",
				conn["totalCount"], total, agents, accepted)
		}

		lua, err := os.ReadFile(wrkFile)
		if err != nil || !strings.Contains(string(lua), "function request()") || !strings.Contains(string(lua), wrkFile+".agents") {
			t.Fatalf("wrk script (%v):\n%.400s", err, lua)
		}
		list, err := os.ReadFile(wrkFile + ".agents")
		if err != nil || strings.Count(string(list), "opsa_") != agents || strings.Count(string(list), "\n") != agents {
			t.Fatalf("wrk agents (%v):\n%.400s", err, list)
		}
	})
}
