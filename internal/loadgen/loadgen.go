// Package loadgen drives simulated agents against a OneProtect server: it enrolls N agents,
// then C workers send heartbeats round-robin over them (each with a new heartbeat_id) for a
// fixed duration, and reports throughput, latency quantiles and answers by status. With a
// Rate, the heartbeats leave on a schedule instead (open loop, openloop.go).
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
)

// Config configures a run.
type Config struct {
	Server          string
	EnrollmentToken string
	Agents          int
	Duration        time.Duration
	Concurrency     int
	// Rate, when positive, sends Rate heartbeats a second on a schedule over Concurrency
	// connections (open loop, openloop.go) instead of each worker's next when its last is answered.
	Rate float64
	// GraphQL sends submitHeartbeat mutations to /query instead of REST heartbeats.
	GraphQL bool
	// AgentsFile, when set, is read if it holds at least Agents agents (no enrollment),
	// else written after enrolling.
	AgentsFile string
	// WrkLua, when set, receives a wrk script posting heartbeats over the agents (read from
	// WrkLua + ".agents"), round-robin or, with `-- random` after the URL, uniformly at random.
	WrkLua string
	// Order picks each heartbeat's agent: OrderRoundRobin (the default), OrderRandom (uniformly
	// at random over the whole fleet, as a real fleet's heartbeats arrive) or OrderOnce (every
	// agent exactly once, in order, then stop: a fleet's first heartbeats).
	Order string
	// Progress receives a live progress line once a second (nil: none).
	Progress io.Writer
	// HTTP is the shared client (default: NewHTTPClient(Concurrency)).
	HTTP *http.Client
	// TLS is how an https:// server is trusted (its roots or a pinned certificate) by the
	// default HTTP client and the agents' own connections; nil: the system's roots.
	TLS *tls.Config
	// AgentConnections gives every agent a keep-alive connection of its own (mtls.go).
	AgentConnections bool
	// MTLS enrolls every agent with a CSR and presents its certificate on its own connection.
	MTLS bool
}

// Summary is the outcome of a run (the --json output).
type Summary struct {
	Server               string            `json:"server"`
	Mode                 string            `json:"mode"`
	Agents               int               `json:"agents"`
	Concurrency          int               `json:"concurrency"`
	Enrolled             int               `json:"enrolled"`
	EnrollmentSeconds    float64           `json:"enrollment_seconds"`
	EnrollmentsPerSecond float64           `json:"enrollments_per_second"`
	ReusedAgentsFile     bool              `json:"reused_agents_file"`
	DurationSeconds      float64           `json:"duration_seconds"`
	Requests             uint64            `json:"requests"`
	Accepted             uint64            `json:"accepted"`
	Errors               uint64            `json:"errors"`
	RequestsPerSecond    float64           `json:"requests_per_second"`
	Latency              Latency           `json:"latency_ms"`                // every answer but 503s
	ShedLatency          *Latency          `json:"shed_latency_ms,omitempty"` // the 503s of load shedding
	OpenLoop             *OpenLoop         `json:"open_loop,omitempty"`       // with a Rate; the latencies above are then from the scheduled times
	StatusCounts         map[string]uint64 `json:"status_counts"`
	GraphQLErrorCodes    map[string]uint64 `json:"graphql_error_codes,omitempty"`
	// With agent connections: whether they present client certificates, and their opening.
	AgentConnections   bool          `json:"agent_connections,omitempty"`
	ClientCertificates bool          `json:"client_certificates,omitempty"`
	Connect            *ConnectPhase `json:"connect,omitempty"`
}

// Latency quantiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Agent is an enrolled simulated agent (the --agents-file format).
type Agent struct {
	ID       string `json:"agent_id"`
	Token    string `json:"token"`
	Hostname string `json:"hostname"`
	// With MTLS: the agent's client certificate and private key (PEM).
	Certificate string `json:"certificate,omitempty"`
	Key         string `json:"key,omitempty"`
}

type agentsFile struct {
	Server string  `json:"server"`
	Agents []Agent `json:"agents"`
}

// The heartbeat orders.
const (
	OrderRoundRobin = "round-robin"
	OrderRandom     = "random"
	OrderOnce       = "once"
)

// NewHTTPClient is a client tuned for many keep-alive connections to one host.
func NewHTTPClient(concurrency int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // the target is the given server, never a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2*concurrency + 16,
		MaxIdleConnsPerHost: 2*concurrency + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func (c *Config) check() error {
	u, err := url.Parse(c.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server must be an http:// or https:// URL, got %q", c.Server)
	}
	c.Server = strings.TrimRight(c.Server, "/")
	switch {
	case c.Agents < 1 || c.Agents > 1_000_000:
		return errors.New("--agents must be between 1 and 1000000")
	case c.Concurrency < 1 || c.Concurrency > 10_000:
		return errors.New("--concurrency must be between 1 and 10000")
	case c.Duration < 0 || c.Duration > 24*time.Hour:
		return errors.New("--duration must be between 0 and 24h")
	}
	switch c.Order {
	case "":
		c.Order = OrderRoundRobin
	case OrderRoundRobin, OrderRandom, OrderOnce:
	default:
		return fmt.Errorf("--order must be %s, %s or %s", OrderRoundRobin, OrderRandom, OrderOnce)
	}
	if err := c.checkRate(); err != nil {
		return err
	}
	if c.HTTP == nil {
		c.HTTP = NewHTTPClient(c.Concurrency)
		if c.TLS != nil {
			c.HTTP.Transport.(*http.Transport).TLSClientConfig = c.TLS.Clone()
		}
	}
	return c.checkMTLS(u)
}

// Run enrolls (or loads) the agents, then drives heartbeats for the duration.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	sum := &Summary{Server: cfg.Server, Mode: "rest", Agents: cfg.Agents, Concurrency: cfg.Concurrency,
		StatusCounts: map[string]uint64{}, AgentConnections: cfg.AgentConnections, ClientCertificates: cfg.MTLS}
	if cfg.GraphQL {
		sum.Mode = "graphql"
		sum.GraphQLErrorCodes = map[string]uint64{}
	}
	agents, err := loadAgents(cfg)
	if err != nil {
		return nil, err
	}
	if agents != nil {
		sum.ReusedAgentsFile = true
	} else {
		if cfg.EnrollmentToken == "" {
			return nil, errors.New("--enrollment-token is required to enroll the agents")
		}
		start := time.Now()
		agents, err = enrollAll(ctx, cfg)
		if err != nil {
			return nil, err
		}
		sum.Enrolled = len(agents)
		sum.EnrollmentSeconds = time.Since(start).Seconds()
		if sum.EnrollmentSeconds > 0 {
			sum.EnrollmentsPerSecond = float64(len(agents)) / sum.EnrollmentSeconds
		}
		if cfg.AgentsFile != "" {
			if err := writeJSONFile(cfg.AgentsFile, agentsFile{Server: cfg.Server, Agents: agents}); err != nil {
				return nil, err
			}
		}
	}
	if cfg.WrkLua != "" {
		if err := writeWrk(cfg.WrkLua, agents); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Rate > 0 && cfg.Duration > 0:
		driveOpenLoop(ctx, cfg, agents, sum)
	case cfg.Duration > 0 || cfg.Order == OrderOnce:
		conns, err := openAgentConns(ctx, cfg, agents, sum)
		if err != nil {
			return nil, err
		}
		defer closeAgentConns(conns)
		drive(ctx, cfg, agents, conns, sum)
	}
	return sum, nil
}

// loadAgents reads the agents file when it holds at least cfg.Agents agents for this server.
func loadAgents(cfg Config) ([]Agent, error) {
	if cfg.AgentsFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.AgentsFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f agentsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.AgentsFile, err)
	}
	if len(f.Agents) < cfg.Agents || (cfg.MTLS && !haveCertificates(f.Agents[:cfg.Agents])) {
		return nil, nil // too few (or without certificates): enroll afresh and overwrite it
	}
	// The file is used even when written for another URL: the same agents can then drive
	// the service and the bare-handler ceiling (whose answers ignore the tokens).
	return f.Agents[:cfg.Agents], nil
}

func writeJSONFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600) // it holds agent tokens
}

// enrollAll enrolls cfg.Agents agents with up to 64 concurrent enrollments (at most --concurrency).
func enrollAll(ctx context.Context, cfg Config) ([]Agent, error) {
	client := &agent.Client{Server: cfg.Server, HTTP: cfg.HTTP}
	run := randomHex(4)
	agents := make([]Agent, cfg.Agents)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range min(cfg.Agents, 64, max(cfg.Concurrency, 8)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Agents || ctx.Err() != nil {
					return
				}
				host := fmt.Sprintf("lg-%s-%06d", run, i)
				csr, key, err := enrollmentCSR(cfg, host)
				var en *agent.Enrollment
				if err == nil {
					en, err = client.Enroll(ctx, agent.EnrollRequest{EnrollmentToken: cfg.EnrollmentToken, Hostname: host,
						AgentVersion: "loadgen/" + agent.Version, MachineID: "loadgen-" + run + "-" + strconv.Itoa(i), CSR: csr})
				}
				if err == nil {
					err = checkIssued(cfg, en)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("enroll agent %d of %d: %w", i+1, cfg.Agents, err); cancel() })
					return
				}
				agents[i] = Agent{ID: en.AgentID, Token: en.Token, Hostname: host, Certificate: en.Certificate, Key: key}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return agents, nil
}

// target is one agent's pre-built request parts: only the heartbeat_id varies.
type target struct {
	url    string
	auth   []string
	head   []byte // the raw request head up to the Content-Length value
	prefix []byte // the body up to the heartbeat id
	suffix []byte // the body after it, up to the uptime's value
	tail   []byte // the body after the uptime
	boot   time.Time
	own    *agentConn // the agent's own connection (nil: the worker's)
}

// uptime is the target machine's uptime now: it grows with time, as a real machine's does, so
// the server sees one boot and no reboots.
func (t *target) uptime() int64 { return int64(time.Since(t.boot) / time.Second) }

var jsonContentType = []string{"application/json"}

func buildTargets(cfg Config, agents []Agent) []target {
	base, _ := url.Parse(cfg.Server)
	out := make([]target, len(agents))
	for i, a := range agents {
		t := target{auth: []string{"Bearer " + a.Token}, boot: sampleBoot(i)}
		inv := sampleInventory(i)
		inv.UptimeSeconds = 0 // sent after the rest, as it changes
		if cfg.GraphQL {
			t.url = cfg.Server + "/query"
			invJSON, _ := json.Marshal(map[string]any{
				"os":          map[string]string{"name": inv.OS.Name, "version": inv.OS.Version, "kernel": inv.OS.Kernel, "arch": inv.OS.Arch},
				"ipAddresses": inv.IPAddresses, "macAddresses": inv.MACAddresses, "cpuCount": inv.CPUCount,
				"memoryBytes": inv.MemoryBytes})
			idJSON, _ := json.Marshal(a.ID)
			hostJSON, _ := json.Marshal(a.Hostname)
			t.prefix = []byte(`{"query":"mutation($a: ID!, $i: HeartbeatInput!) { submitHeartbeat(agentId: $a, input: $i) { accepted duplicate } }","variables":{"a":` +
				string(idJSON) + `,"i":{"heartbeatId":"`)
			t.suffix = []byte(`","hostname":` + string(hostJSON) + `,"agentVersion":"loadgen/` + agent.Version + `","inventory":` +
				string(invJSON[:len(invJSON)-1]) + `,"uptimeSeconds":`)
			t.tail = []byte(`}}}}`)
		} else {
			t.url = cfg.Server + "/api/v1/agents/" + url.PathEscape(a.ID) + "/telemetry/heartbeat"
			t.prefix = []byte(`{"heartbeat_id":"`)
			t.suffix = []byte(restSuffix(i, a))
			t.tail = []byte(`}}`)
		}
		u, _ := url.Parse(t.url)
		t.head = rawHead(base, u.RequestURI(), t.auth[0])
		out[i] = t
	}
	return out
}

// sampleInventory is a small, realistic inventory that differs a little per agent.
// restSuffix is agent i's REST heartbeat body after the heartbeat id, up to the uptime's value
// (which grows with time, so it is sent last): the same inventory on every heartbeat.
func restSuffix(i int, a Agent) string {
	inv := sampleInventory(i)
	inv.UptimeSeconds = 0
	rest, _ := json.Marshal(struct {
		Hostname     string           `json:"hostname"`
		AgentVersion string           `json:"agent_version"`
		Inventory    *agent.Inventory `json:"inventory"`
	}{a.Hostname, "loadgen/" + agent.Version, &inv})
	return `",` + string(rest[1:len(rest)-2]) + `,"uptime_seconds":`
}

// sampleBoot is when simulated machine i booted: a fixed instant, so that the load generator
// and the wrk script, run one after the other, report the same boot (and no reboot).
func sampleBoot(i int) time.Time {
	return time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(-time.Duration(i%86400) * time.Second)
}

func sampleInventory(i int) agent.Inventory {
	oses := []agent.OS{
		{Name: "Ubuntu", Version: "24.04", Kernel: "6.8.0-45-generic", Arch: "amd64"},
		{Name: "Debian GNU/Linux", Version: "12", Kernel: "6.1.0-18-amd64", Arch: "amd64"},
		{Name: "Windows Server", Version: "2022", Kernel: "10.0.20348", Arch: "amd64"},
		{Name: "Red Hat Enterprise Linux", Version: "9.4", Kernel: "5.14.0-427.el9.x86_64", Arch: "amd64"},
	}
	o := oses[i%len(oses)]
	return agent.Inventory{OS: &o,
		IPAddresses:  []string{fmt.Sprintf("10.%d.%d.%d", 1+i>>16&0xff, i>>8&0xff, i&0xff)},
		MACAddresses: []string{fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)},
		CPUCount:     []int{2, 4, 8, 16}[i%4], MemoryBytes: float64(int64(4+4*(i%8)) << 30), UptimeSeconds: float64(3600 + i)}
}

// workerStats are one worker's counters, merged at the end (no sharing on the hot path
// but the two progress counters).
type workerStats struct {
	hist     histogram // every answer but load shedding's
	shed     histogram // 503 answers: the server shedding load
	status   map[int]uint64
	gqlCodes map[string]uint64
	accepted uint64
}

func drive(ctx context.Context, cfg Config, agents []Agent, conns []*agentConn, sum *Summary) {
	targets := buildTargets(cfg, agents)
	for i, c := range conns {
		targets[i].own = c
	}
	run := randomHex(6)
	var requests, errCount atomic.Uint64
	var cursor atomic.Uint64
	stats := make([]*workerStats, cfg.Concurrency)
	start := time.Now()
	deadline := start.Add(cfg.Duration)

	stopProgress := progress(cfg, start, &requests, &errCount)

	rawAddr := rawAddress(cfg.Server)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		ws := &workerStats{status: map[int]uint64{}, gqlCodes: map[string]uint64{}}
		stats[w] = ws
		wg.Add(1)
		go func() {
			defer wg.Done()
			idPrefix := run + "-" + strconv.Itoa(w) + "-"
			var seq uint64
			var respBuf bytes.Buffer
			var body, req []byte
			raw := &rawConn{addr: rawAddr}
			defer raw.close()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil && (cfg.Order == OrderOnce || time.Now().Before(deadline)) {
				var t *target
				switch next := cursor.Add(1) - 1; cfg.Order {
				case OrderRandom:
					t = &targets[rng.IntN(len(targets))]
				case OrderOnce:
					if next >= uint64(len(targets)) {
						return
					}
					t = &targets[next]
				default:
					t = &targets[next%uint64(len(targets))]
				}
				seq++
				body = append(body[:0], t.prefix...)
				body = append(body, idPrefix...)
				body = strconv.AppendUint(body, seq, 10)
				body = append(body, t.suffix...)
				body = strconv.AppendInt(body, t.uptime(), 10)
				body = append(body, t.tail...)
				var ok bool
				if rawAddr != "" || t.own != nil {
					req = append(req[:0], t.head...)
					req = strconv.AppendInt(req, int64(len(body)), 10)
					req = append(req, "\r\n\r\n"...)
					req = append(req, body...)
					c, release := t.conn(raw)
					began := time.Now()
					status, err := c.do(req, &respBuf)
					ws.latency(status, time.Since(began))
					release()
					if err != nil {
						status = 0
						if agent.Sleep(ctx, 10*time.Millisecond) != nil { // the server is gone: do not spin
							break
						}
					}
					ok = ws.record(cfg, status, respBuf.Bytes())
				} else {
					// net/http takes ownership of the body until the answer: a fresh copy.
					ok = send(ctx, cfg, t, bytes.Clone(body), ws, &respBuf)
				}
				requests.Add(1)
				if !ok {
					errCount.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	sum.collect(stats, requests.Load(), errCount.Load(), elapsed)
}

// progress prints the live progress line once a second until the returned stop is called.
func progress(cfg Config, start time.Time, requests, errCount *atomic.Uint64) (stop func()) {
	if cfg.Progress == nil {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprintf(cfg.Progress, "\r%80s\r", "")
				return
			case <-tick.C:
				el := max(time.Since(start).Seconds(), 1e-3)
				n := requests.Load()
				fmt.Fprintf(cfg.Progress, "\relapsed %4.0fs  requests %9d  req/s %8.0f  errors %-9d", el, n, float64(n)/el, errCount.Load())
			}
		}
	}()
	return func() { close(quit); <-done }
}

// rawAddress is the host:port for the raw keep-alive client when the server is plain
// http://, or "" for https://, which goes through net/http.
func rawAddress(server string) string {
	u, _ := url.Parse(server)
	if u == nil || u.Scheme != "http" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

// collect folds the workers' counters into the summary: requests, rates, latencies (503s
// apart) and answers by status.
func (sum *Summary) collect(stats []*workerStats, requests, errs uint64, elapsed time.Duration) {
	var all, shed histogram
	for _, ws := range stats {
		all.merge(&ws.hist)
		shed.merge(&ws.shed)
		sum.Accepted += ws.accepted
		for code, n := range ws.status {
			key := strconv.Itoa(code)
			if code == 0 {
				key = "transport_error"
			}
			sum.StatusCounts[key] += n
		}
		for code, n := range ws.gqlCodes {
			sum.GraphQLErrorCodes[code] += n
		}
	}
	sum.Requests, sum.Errors = requests, errs
	sum.DurationSeconds = elapsed.Seconds()
	if sum.DurationSeconds > 0 {
		sum.RequestsPerSecond = float64(sum.Requests) / sum.DurationSeconds
	}
	sum.Latency = latencyOf(&all)
	if shed.total > 0 {
		l := latencyOf(&shed)
		sum.ShedLatency = &l
	}
}

func latencyOf(h *histogram) Latency {
	return Latency{P50: h.quantile(0.50), P95: h.quantile(0.95), P99: h.quantile(0.99),
		Max: float64(h.max) / 1000, Mean: h.meanMillis()}
}

// send posts one heartbeat and records it; ok is false for anything but an accepted one.
func send(ctx context.Context, cfg Config, t *target, body []byte, ws *workerStats, buf *bytes.Buffer) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		ws.status[0]++
		return false
	}
	req.Header = http.Header{"Content-Type": jsonContentType, "Authorization": t.auth}
	began := time.Now()
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		ws.hist.record(time.Since(began))
		ws.status[0]++
		return false
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	ws.latency(resp.StatusCode, time.Since(began))
	status := resp.StatusCode
	if err != nil {
		status = 0
	}
	return ws.record(cfg, status, buf.Bytes())
}

// record counts one answer (status 0: a transport failure); it reports whether the
// heartbeat was accepted.
// latency records how long one answer took, apart for 503s (refusals under load shedding,
// which should be fast) and everything else.
func (ws *workerStats) latency(status int, d time.Duration) {
	if status == http.StatusServiceUnavailable {
		ws.shed.record(d)
		return
	}
	ws.hist.record(d)
}

func (ws *workerStats) record(cfg Config, status int, body []byte) bool {
	ws.status[status]++
	if status != http.StatusOK {
		return false
	}
	if cfg.GraphQL {
		if code, failed := graphQLError(body); failed {
			ws.gqlCodes[code]++
			return false
		}
		if !bytes.Contains(body, []byte(`"accepted":true`)) {
			ws.gqlCodes["NOT_ACCEPTED"]++
			return false
		}
	}
	ws.accepted++
	return true
}

// graphQLError returns the first error's extensions.code when the answer has errors.
func graphQLError(body []byte) (string, bool) {
	if !bytes.Contains(body, []byte(`"errors"`)) {
		return "", false
	}
	var out struct {
		Errors []struct {
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Errors) == 0 {
		return "UNREADABLE", true
	}
	if out.Errors[0].Extensions.Code == "" {
		return "UNKNOWN", true
	}
	return out.Errors[0].Extensions.Code, true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Format renders the summary for people.
func (s *Summary) Format() string {
	var b strings.Builder
	if s.ReusedAgentsFile {
		fmt.Fprintf(&b, "agents:       %d (reused from the agents file)\n", s.Agents)
	} else {
		fmt.Fprintf(&b, "enrollment:   %d agents in %.2fs (%.0f enrollments/s)\n", s.Enrolled, s.EnrollmentSeconds, s.EnrollmentsPerSecond)
	}
	fmt.Fprintf(&b, "heartbeats:   %s, concurrency %d, %.1fs\n", strings.ToUpper(s.Mode), s.Concurrency, s.DurationSeconds)
	fmt.Fprintf(&b, "requests:     %d (%d accepted, %d errors)\n", s.Requests, s.Accepted, s.Errors)
	fmt.Fprintf(&b, "throughput:   %.0f req/s\n", s.RequestsPerSecond)
	fmt.Fprintf(&b, "latency:      p50 %.2fms  p95 %.2fms  p99 %.2fms  max %.2fms  mean %.2fms\n",
		s.Latency.P50, s.Latency.P95, s.Latency.P99, s.Latency.Max, s.Latency.Mean)
	if l := s.ShedLatency; l != nil {
		fmt.Fprintf(&b, "503 answers:  p50 %.2fms  p99 %.2fms  max %.2fms\n", l.P50, l.P99, l.Max)
	}
	s.formatOpenLoop(&b)
	fmt.Fprintf(&b, "status codes: %s\n", formatCounts(s.StatusCounts))
	if len(s.GraphQLErrorCodes) > 0 {
		fmt.Fprintf(&b, "graphql errors: %s\n", formatCounts(s.GraphQLErrorCodes))
	}
	s.formatConnections(&b)
	return b.String()
}

func formatCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
