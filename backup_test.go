package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// heartbeatLoad keeps every agent sending heartbeats back to back (REST and GraphQL in
// turn) and remembers which were acknowledged.
type heartbeatLoad struct {
	t     *testing.T
	mu    sync.Mutex
	acked map[string][]string // agent id -> acknowledged heartbeat ids, in order
	total int
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(t *testing.T, c *client, agents []fleetAgent, tag string) *heartbeatLoad {
	l := &heartbeatLoad{t: t, acked: map[string][]string{}, stop: make(chan struct{})}
	for i, a := range agents {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := tag + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(n)
				ok, err := c.sendHeartbeat(a, id, n%2 == 1)
				if err != nil || !ok {
					t.Errorf("heartbeat %s: accepted=%v %v", id, ok, err)
					return
				}
				l.mu.Lock()
				l.acked[a.id] = append(l.acked[a.id], id)
				l.total++
				l.mu.Unlock()
			}
		})
	}
	return l
}

// snapshot returns a copy of what was acknowledged so far.
func (l *heartbeatLoad) snapshot() (map[string][]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.acked))
	for k, v := range l.acked {
		out[k] = append([]string(nil), v...)
	}
	return out, l.total
}

// waitTotal waits until at least n heartbeats were acknowledged.
func (l *heartbeatLoad) waitTotal(n int) {
	l.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, total := l.snapshot(); total >= n {
			return
		}
		if time.Now().After(deadline) || l.t.Failed() {
			l.t.Fatalf("the load did not reach %d acknowledged heartbeats", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *heartbeatLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// expectServed checks, on a server started on a copy, that every heartbeat in acked is
// there: each asset's heartbeatCount (GraphQL) covers them, and each repeat is a duplicate.
func expectServed(t *testing.T, dsn, admin string, agents []fleetAgent, acked map[string][]string) {
	t.Helper()
	env := testenv.New(t, dsn, func(c *app.Config) { c.Now = time.Now })
	c := &client{t: t, base: env.Server.URL, http: http.DefaultClient}
	d := c.gql(admin, `{ assets(first: 100) { totalCount } }`, nil)
	if n := d["assets"].(map[string]any)["totalCount"].(float64); int(n) < len(agents) {
		t.Errorf("the copy serves %v assets, want at least %d", n, len(agents))
	}
	for _, a := range agents {
		ids := acked[a.id]
		if len(ids) == 0 {
			t.Fatalf("agent %s had no heartbeat acknowledged before the backup", a.id)
		}
		d := c.gql(admin, `query($id: ID!) { asset(id: $id) { heartbeatCount } }`, map[string]any{"id": a.assetID})
		if got := d["asset"].(map[string]any)["heartbeatCount"].(float64); int(got) < len(ids) {
			t.Errorf("agent %s: the copy counts %v heartbeats, %d were acknowledged before the backup", a.id, got, len(ids))
		}
		for _, id := range ids {
			status, v, err := c.post("/api/v1/agents/"+a.id+"/telemetry/heartbeat", a.token, heartbeatBody(id))
			if err != nil || status != 200 || v["duplicate"] != true {
				t.Fatalf("heartbeat %s, acknowledged before the backup, is not in the copy: %d %v %v", id, status, v, err)
			}
		}
	}
}

// serving starts the service on dsn with a tenant admin and n enrolled agents.
func serving(t *testing.T, dsn string, n int) (*client, string, []fleetAgent) {
	t.Helper()
	t.Setenv("ONEPROTECT_AGENT_RATE_LIMIT", "0")
	env := testenv.New(t, dsn, func(c *app.Config) { c.Now = time.Now })
	tenant := env.Tenant("backup")
	c := &client{t: t, base: env.Server.URL, http: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	return c, tenant.AdminToken, c.enrollFleet(tenant.AdminToken, n)
}

// `oneprotect backup` while heartbeats pour in: the copy holds every heartbeat acknowledged
// before the backup began, and a server started on it serves them.
func TestBackupUnderLoad(t *testing.T) {
	dsn := testenv.NewSQLite(t)
	c, admin, agents := serving(t, dsn, 8)
	load := startLoad(t, c, agents, "hb")
	load.waitTotal(200)
	before, n := load.snapshot()
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"backup", "--db", dsn, "--to", copyPath, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errOut.String())
	}
	load.waitTotal(n + 200) // heartbeats kept being accepted during and after the backup
	load.halt()
	if !strings.Contains(out.String(), `"backup"`) {
		t.Errorf("backup --json printed %q", out.String())
	}
	expectServed(t, copyPath, admin, agents, before)

	// A second backup to the same file is refused; the first copy stays as it was.
	info, _ := os.Stat(copyPath)
	errOut.Reset()
	if code := run(context.Background(), []string{"backup", "--db", dsn, "--to", copyPath}, &out, &errOut); code == 0 ||
		!strings.Contains(errOut.String(), "already exists") {
		t.Errorf("backup over an existing file: exit %d, %q", code, errOut.String())
	}
	if again, _ := os.Stat(copyPath); again.Size() != info.Size() || !again.ModTime().Equal(info.ModTime()) {
		t.Error("a refused backup changed the existing file")
	}
	if code := run(context.Background(), []string{"backup", "--db", dsn}, &out, &errOut); code != 2 {
		t.Errorf("backup without --to: exit %d, want 2", code)
	}
}

// PostgreSQL has its own tools: `oneprotect backup` points to them, and a pg_dump taken
// under load, restored with pg_restore (internal/tools/pg-backup-restore.sh), serves.
func TestPostgresBackupRestore(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"backup", "--db", "postgres://postgres@127.0.0.1:1/x", "--to", filepath.Join(t.TempDir(), "x")}, &bytes.Buffer{}, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "pg_dump") {
		t.Errorf("backup of a PostgreSQL URL: exit %d, %q; want a refusal naming pg_dump", code, errOut.String())
	}

	var pg *testenv.Database
	for _, db := range testenv.Databases(t) {
		if db.Name == "postgres" {
			pg = &db
		}
	}
	if pg == nil {
		t.Skip("PostgreSQL is not configured (" + testenv.PostgresEnv + ")")
	}
	for _, tool := range []string{"pg_dump", "pg_restore", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	src, dst := pg.New(t), pg.New(t) // dst: a new, empty database
	c, admin, agents := serving(t, src, 8)
	load := startLoad(t, c, agents, "pg")
	load.waitTotal(200)
	before, n := load.snapshot()
	script := exec.Command("bash", filepath.Join("internal", "tools", "pg-backup-restore.sh"), src, dst)
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("pg-backup-restore.sh: %v\n%s", err, out)
	}
	load.waitTotal(n + 100)
	load.halt()
	expectServed(t, dst, admin, agents, before)
}
