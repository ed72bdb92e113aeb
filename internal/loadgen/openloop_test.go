package loadgen

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// The connections share one schedule: together they make every arrival of the rate exactly
// once, evenly spaced, each connection every conns/rate seconds.
func TestOpenLoopScheduleCoversTheRate(t *testing.T) {
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		rate     float64
		conns    int
		duration time.Duration
		want     int
	}{
		{1000, 4, time.Second, 1000},
		{1000, 3, time.Second, 1000}, // 1000 arrivals do not split evenly over 3
		{250, 1, 2 * time.Second, 500},
		{10, 64, time.Second, 10}, // more connections than arrivals: most send nothing
		{3, 2, 500 * time.Millisecond, 2},
	} {
		var all []time.Time
		for w := range c.conns {
			s := newSchedule(start, c.rate, c.conns, w)
			n := s.count(c.duration)
			for k := range n {
				at := s.at(k)
				if at.Before(start) || !at.Before(start.Add(c.duration)) {
					t.Fatalf("%+v: connection %d's arrival %d at %v, outside the run", c, w, k, at.Sub(start))
				}
				if k > 0 && at.Sub(s.at(k-1)) != time.Duration(float64(c.conns)*1e9/c.rate) {
					t.Fatalf("%+v: connection %d's arrivals %d and %d are %v apart", c, w, k-1, k, at.Sub(s.at(k-1)))
				}
				all = append(all, at)
			}
			if s.at(n).Before(start.Add(c.duration)) {
				t.Fatalf("%+v: connection %d counted %d arrivals but the next is still within the run", c, w, n)
			}
		}
		if len(all) != c.want {
			t.Fatalf("%+v: %d arrivals, want %d", c, len(all), c.want)
		}
		slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
		for i, at := range all {
			if want := start.Add(time.Duration(float64(i) * 1e9 / c.rate)); at.Sub(want).Abs() > time.Microsecond {
				t.Fatalf("%+v: arrival %d at %v, want %v", c, i, at.Sub(start), want.Sub(start))
			}
		}
	}
}

func TestOpenLoopConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Rate: -1}, "--rate"},
		{Config{Rate: 2 * maxRate}, "--rate"},
		{Config{Rate: 10, Order: OrderOnce}, "--order once"},
	} {
		c.cfg.Server, c.cfg.Agents, c.cfg.Concurrency = "http://127.0.0.1:1", 1, 1
		if err := c.cfg.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.cfg, err, c.want)
		}
	}
}

// Against the service: every scheduled heartbeat is either sent or counted unsent, and every
// one accepted is stored once.
func TestOpenLoopAgainstTheService(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("Open loop")
		site := env.Site(ten, "HQ")
		const agents = 10
		token := env.EnrollmentToken(ten, site, nil, agents)
		agentsFile := filepath.Join(t.TempDir(), "agents.json") // the GraphQL run reuses the REST run's agents
		var accepted uint64
		for _, graphql := range []bool{false, true} {
			sum, err := Run(context.Background(), Config{Server: env.Server.URL, EnrollmentToken: token, Agents: agents,
				AgentsFile: agentsFile, Concurrency: 4, Rate: 200, Duration: time.Second, Order: OrderRandom, GraphQL: graphql})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("graphql=%v:\n%s", graphql, sum.Format())
			o := sum.OpenLoop
			if o == nil || o.Rate != 200 || o.Scheduled != 200 || sum.Requests+o.Unsent != o.Scheduled {
				t.Fatalf("graphql=%v: %d sent, open loop %+v: want 200 scheduled, each sent or unsent", graphql, sum.Requests, o)
			}
			if sum.Requests == 0 || sum.Accepted != sum.Requests || sum.Errors != 0 || sum.StatusCounts["200"] != sum.Requests {
				t.Fatalf("graphql=%v: %d sent, %d accepted, %d errors, status %v", graphql, sum.Requests, sum.Accepted, sum.Errors, sum.StatusCounts)
			}
			// Measured from its scheduled time, a request's latency is never below its time
			// from the send.
			if sum.Latency.Max < o.ServiceTime.Max || sum.Latency.Mean < o.ServiceTime.Mean || sum.ShedLatency != nil {
				t.Fatalf("graphql=%v: latency %+v, service time %+v", graphql, sum.Latency, o.ServiceTime)
			}
			accepted += sum.Accepted
		}
		d := env.MustGQL(ten.AdminToken, `{ assets(first: 50) { totalCount edges { node { heartbeatCount } } } }`, nil)
		conn := d["assets"].(map[string]any)
		var total float64
		for _, e := range conn["edges"].([]any) {
			total += e.(map[string]any)["node"].(map[string]any)["heartbeatCount"].(float64)
		}
		if uint64(total) != accepted {
			t.Fatalf("%v heartbeats stored, want %d (every accepted one once)", total, accepted)
		}
	})
}

// A server that answers late holds the connection: the arrivals due meanwhile wait, their
// latency counts the wait, and those still waiting at the end are reported unsent.
func TestOpenLoopCountsWhatItCouldNotSend(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return // the connection opened before the clock starts
		}
		calls.Add(1)
		time.Sleep(400 * time.Millisecond) // longer than the whole run
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	sum := &Summary{StatusCounts: map[string]uint64{}}
	cfg := Config{Server: srv.URL, Agents: 1, Concurrency: 1, Rate: 50, Duration: 200 * time.Millisecond}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	driveOpenLoop(context.Background(), cfg, []Agent{{ID: "a", Token: "t", Hostname: "h"}}, sum)
	o := sum.OpenLoop
	t.Logf("\n%s", sum.Format())
	if o.Scheduled != 10 || sum.Requests > 1 || sum.Requests+o.Unsent != 10 || uint64(calls.Load()) != sum.Requests {
		t.Fatalf("%d sent (%d reached the server), open loop %+v: want 10 scheduled, at most one sent", sum.Requests, calls.Load(), o)
	}
	if sum.Requests == 1 && (sum.StatusCounts["503"] != 1 || sum.ShedLatency == nil || o.ShedServiceTime == nil || sum.Accepted != 0) {
		t.Fatalf("the 503 is not counted apart: status %v, shed %v, shed service %v", sum.StatusCounts, sum.ShedLatency, o.ShedServiceTime)
	}
	if !strings.Contains(sum.Format(), "the rate was not held") {
		t.Fatalf("the summary does not say the rate was not held:\n%s", sum.Format())
	}
}

// Every connection is open before the first arrival is due: the clock does not charge the
// first arrivals with a connection storm that a fleet of keep-alive agents never sends.
func TestOpenLoopOpensItsConnectionsBeforeTheClock(t *testing.T) {
	var conns, atFirst atomic.Int64
	atFirst.Store(-1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			atFirst.CompareAndSwap(-1, conns.Load())
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	const workers = 20
	cfg := Config{Server: srv.URL, Agents: 1, Concurrency: workers, Rate: 200, Duration: 300 * time.Millisecond}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	sum := &Summary{StatusCounts: map[string]uint64{}}
	driveOpenLoop(context.Background(), cfg, []Agent{{ID: "a", Token: "t", Hostname: "h"}}, sum)
	if sum.Requests == 0 || atFirst.Load() != workers || conns.Load() != workers {
		t.Fatalf("%d heartbeats; %d connections open at the first, %d in all: want all %d open before it and kept",
			sum.Requests, atFirst.Load(), conns.Load(), workers)
	}
}
