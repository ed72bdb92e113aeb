package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
	"github.com/oneprotect/telemetry/migrations"
)

// Two replicas starting at the same moment on one empty database: both migrate (taking
// turns) and both serve.
func TestReplicasMigrateAtTheSameMoment(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const replicas = 4
		apps := make([]*app.App, replicas)
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		for i := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg := app.Defaults()
				cfg.DB = dsn
				apps[i], errs[i] = app.Open(context.Background(), cfg)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
			defer apps[i].Close()
		}
		var applied int
		if err := apps[0].Store.R.NewRaw("SELECT COUNT(*) FROM bun_migrations").Scan(context.Background(), &applied); err != nil {
			t.Fatal(err)
		}
		files, err := migrationFiles()
		if err != nil {
			t.Fatal(err)
		}
		if applied != files {
			t.Fatalf("%d migrations recorded, want %d (each once)", applied, files)
		}
		for i, a := range apps {
			if err := a.Store.Ping(context.Background()); err != nil {
				t.Fatalf("replica %d not ready: %v", i, err)
			}
		}
	})
}

// With --introspection=false, introspection is refused and error messages suggest no field
// names.
func TestIntrospectionDisabled(t *testing.T) {
	env := testenv.New(t, testenv.NewSQLite(t), func(c *app.Config) { c.Introspection = false })
	tenant := env.Tenant("Closed")
	r := env.GQL(tenant.AdminToken, `{ __schema { types { name } } }`, nil)
	if len(r.Errors) == 0 || r.Data["__schema"] != nil {
		t.Fatalf("introspection answered: %s", r.Raw)
	}
	r = env.GQL(tenant.AdminToken, `{ viewr { id } }`, nil)
	if len(r.Errors) == 0 || strings.Contains(string(r.Raw), "Did you mean") || strings.Contains(string(r.Raw), "viewer") {
		t.Fatalf("suggestion leaked: %s", r.Raw)
	}
	// Enabled (the default), the same typo is refused too, with gqlgen's help.
	open := testenv.New(t, testenv.NewSQLite(t))
	r = open.GQL(open.Tenant("Open").AdminToken, `{ viewr { id } }`, nil)
	if r.Code() != "GRAPHQL_VALIDATION_FAILED" {
		t.Fatalf("typo: %s", r.Raw)
	}
}

// SIGTERM lets a request that is in flight finish, then the process exits 0.
func TestServeDrainsInFlightRequestsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signals the real binary")
	}
	bin := buildBinary(t)
	srv := startServer(t, bin, testenv.NewSQLite(t))
	addr := strings.TrimPrefix(srv.base, "http://")

	// Start an enrollment whose body arrives in two parts, and signal between them.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"enrollment_token": "opet_unknown", "hostname": "drain"}`
	fmt.Fprintf(conn, "POST /api/v1/agents/enroll HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		addr, len(body), body[:10])
	time.Sleep(200 * time.Millisecond) // the server is now reading the body
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := conn.Write([]byte(body[10:])); err != nil {
		t.Fatalf("finishing the in-flight request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("in-flight request answered %d, want 401 invalid_enrollment_token", resp.StatusCode)
	}

	done := make(chan error, 1)
	go func() { done <- srv.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if _, err := http.Get(srv.base + "/healthz"); err == nil {
		t.Fatal("still accepting connections after SIGTERM")
	}
}

func migrationFiles() (int, error) {
	return len(migrations.All.Sorted()), nil
}

// Events name the principal that acted: the admin for a revocation, the agent's own service
// account for an enrollment and a heartbeat.
func TestEventsNameTheActor(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Actors")
		r := env.Do(http.MethodPost, "/api/v1/agents/"+f.Agent.ID+"/telemetry/heartbeat", f.Agent.Token, map[string]any{"heartbeat_id": "a-1"})
		if r.Status != http.StatusOK {
			t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
		}
		agentPrincipal := env.MustGQL(f.Agent.Token, `{ viewer { id } }`, nil)["viewer"].(map[string]any)["id"]
		admin := env.MustGQL(f.Tenant.AdminToken, `{ viewer { id } }`, nil)["viewer"].(map[string]any)["id"]
		env.MustGQL(f.Tenant.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": f.Agent.ID})

		d := env.MustGQL(f.Tenant.ViewerToken, `query($a: ID!) { events(filter: {agentId: $a}) { edges { node { type actorId } } } }`,
			map[string]any{"a": f.Agent.ID})
		want := map[string]any{"agent.revoked": admin, "asset.telemetry.received": agentPrincipal,
			"asset.discovered": agentPrincipal, "agent.enrolled": agentPrincipal}
		edges := d["events"].(map[string]any)["edges"].([]any)
		if len(edges) != len(want) {
			t.Fatalf("events: %v", edges)
		}
		for _, e := range edges {
			n := e.(map[string]any)["node"].(map[string]any)
			if n["actorId"] != want[n["type"].(string)] {
				t.Errorf("%s: actorId %v, want %v", n["type"], n["actorId"], want[n["type"].(string)])
			}
		}
	})
}
