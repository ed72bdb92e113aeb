// Package demo is `oneprotect serve --demo`: a demo tenant with an admin token, two sites,
// a collector and a few dozen simulated agents heartbeating over real HTTP, so the
// playground shows a live fleet with nothing to prepare.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

// Demo settings.
const (
	TenantSlug    = "demo"
	AgentCount    = 36
	hqAgents      = 24 // the rest sit on the branch site, bound to its collector
	minInterval   = 5 * time.Second
	maxInterval   = 10 * time.Second
	hqSiteName    = "Headquarters"
	branchName    = "Branch Office"
	collectorName = "Branch Collector"
)

// Fleet is a started demo.
type Fleet struct {
	TenantID      string
	AdminToken    string
	PlaygroundURL string
	wg            sync.WaitGroup
}

// Wait blocks until every simulated agent has stopped (after ctx ends).
func (f *Fleet) Wait() { f.wg.Wait() }

// Start prepares the demo tenant (idempotently: a restart reuses the tenant, sites,
// collector and assets), mints a fresh admin token (tokens are stored only as hashes, so
// the one from an earlier start cannot be shown again), prints how to use it to w, and
// starts the simulated agents against base until ctx ends.
func Start(ctx context.Context, a *app.App, base string, w io.Writer) (*Fleet, error) {
	base = strings.TrimRight(base, "/")
	tenant, err := a.Store.TenantByIDOrSlug(ctx, TenantSlug)
	if errors.Is(err, store.ErrNotFound) {
		tenant, err = a.Tenancy.CreateTenant(ctx, "Demo", TenantSlug)
	}
	if err != nil {
		return nil, fmt.Errorf("demo tenant: %w", err)
	}
	admin, token, err := a.Tenancy.CreateUser(ctx, tenant.ID, "demo admin", domain.RoleAdmin)
	if err != nil {
		return nil, fmt.Errorf("demo admin: %w", err)
	}
	actx := auth.WithPrincipal(ctx, admin)
	hq, err := ensureSite(actx, a, hqSiteName)
	if err != nil {
		return nil, err
	}
	branch, err := ensureSite(actx, a, branchName)
	if err != nil {
		return nil, err
	}
	collectorID, err := ensureCollector(actx, a, branch.ID)
	if err != nil {
		return nil, err
	}
	ttl := 3600
	hqUses, branchUses := 4*hqAgents, 4*(AgentCount-hqAgents) // room for re-enrollments
	hqToken, err := a.Enrollment.CreateToken(actx, hq.ID, nil, &ttl, &hqUses)
	if err != nil {
		return nil, fmt.Errorf("demo enrollment token: %w", err)
	}
	branchToken, err := a.Enrollment.CreateToken(actx, branch.ID, &collectorID, &ttl, &branchUses)
	if err != nil {
		return nil, fmt.Errorf("demo enrollment token: %w", err)
	}

	f := &Fleet{TenantID: tenant.ID, AdminToken: token, PlaygroundURL: base + "/playground"}
	printBanner(w, f, base)

	client := &agent.Client{Server: base, HTTP: &http.Client{Timeout: 15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: AgentCount, IdleConnTimeout: 90 * time.Second}}}
	log := a.Config.Log
	for i := range AgentCount {
		enrollToken := hqToken.Secret
		if i >= hqAgents {
			enrollToken = branchToken.Secret
		}
		sim := &simAgent{n: i, client: client, enrollToken: enrollToken, log: log}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			sim.run(ctx)
		}()
	}
	return f, nil
}

func ensureSite(ctx context.Context, a *app.App, name string) (*domain.Site, error) {
	sites, err := a.Tenancy.Sites(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range sites {
		if s.Name == name {
			return s, nil
		}
	}
	s, err := a.Tenancy.CreateSite(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("demo site %q: %w", name, err)
	}
	return s, nil
}

func ensureCollector(ctx context.Context, a *app.App, siteID string) (string, error) {
	cs, err := a.Tenancy.Collectors(ctx, &siteID)
	if err != nil {
		return "", err
	}
	for _, c := range cs {
		if c.Name == collectorName {
			return c.ID, nil
		}
	}
	c, _, err := a.Tenancy.CreateCollector(ctx, siteID, collectorName)
	if err != nil {
		return "", fmt.Errorf("demo collector: %w", err)
	}
	return c.ID, nil
}

func printBanner(w io.Writer, f *Fleet, base string) {
	headers, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + f.AdminToken})
	fmt.Fprintf(w, `
==== OneProtect demo ====
Fleet view:   %s/   (paste the admin token below)
Playground:   %s
Admin token:  %s
  (tenant %q; a fresh ADMIN token is minted at every start)
Headers (paste into the playground's Headers panel):
  %s
Try:
  { assets(first: 50) { totalCount edges { node { hostname online os { name version } ipAddresses site { name } lastSeenAt heartbeatCount } } } }
or:
  curl -s %s/query -H 'Content-Type: application/json' -H 'Authorization: Bearer %s' \
    -d '{"query":"{ assets(first: 5) { totalCount edges { node { hostname online } } } }"}'
%d simulated agents heartbeat every %s-%s on %q and %q; a few go quiet now and then,
so the fleet shows assets going offline and back.
=========================

`, base, f.PlaygroundURL, f.AdminToken, TenantSlug, headers, base, f.AdminToken, AgentCount, minInterval, maxInterval, hqSiteName, branchName)
}

// A simulated machine of the demo fleet.
type simAgent struct {
	n           int
	client      *agent.Client
	enrollToken string
	log         *slog.Logger
	id, token   string
	seq         int
}

// behaviours: most agents are steady; every ninth goes quiet for good after its first
// heartbeat (a decommissioned machine) and every ninth from the fifth flaps (a laptop).
func (s *simAgent) retired() bool { return s.n%9 == 8 }
func (s *simAgent) flaky() bool   { return s.n%9 == 4 }

func (s *simAgent) run(ctx context.Context) {
	// Spread the start so the fleet does not arrive in one burst.
	if agent.Sleep(ctx, time.Duration(s.n)*50*time.Millisecond) != nil {
		return
	}
	if !s.enroll(ctx) {
		return
	}
	upUntil := time.Now().Add(randDuration(60*time.Second, 120*time.Second))
	for {
		if s.flaky() && time.Now().After(upUntil) {
			// Quiet long enough to turn offline, then back.
			if agent.Sleep(ctx, randDuration(45*time.Second, 90*time.Second)) != nil {
				return
			}
			upUntil = time.Now().Add(randDuration(60*time.Second, 120*time.Second))
		}
		if !s.heartbeat(ctx) || s.retired() {
			return
		}
		if agent.Sleep(ctx, randDuration(minInterval, maxInterval)) != nil {
			return
		}
	}
}

// enroll enrolls with a stable machine id, so that a restart of the demo keeps each
// machine's asset (the re-enrollment supersedes the previous identity).
func (s *simAgent) enroll(ctx context.Context) bool {
	for attempt := 0; ; attempt++ {
		en, err := s.client.Enroll(ctx, agent.EnrollRequest{EnrollmentToken: s.enrollToken, Hostname: s.hostname(),
			AgentVersion: s.version(), MachineID: fmt.Sprintf("demo-machine-%02d", s.n)})
		if err == nil {
			s.id, s.token = en.AgentID, en.Token
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if attempt >= 10 {
			s.log.Warn("demo agent could not enroll", "host", s.hostname(), "err", err)
			return false
		}
		if agent.Sleep(ctx, time.Second) != nil {
			return false
		}
	}
}

// heartbeat sends one heartbeat; false means this agent should stop.
func (s *simAgent) heartbeat(ctx context.Context) bool {
	s.seq++
	inv := s.inventory()
	body, _ := json.Marshal(agent.HeartbeatBody{HeartbeatID: fmt.Sprintf("demo-%d-%d", time.Now().UnixNano(), s.seq),
		SentAt: time.Now().UTC(), Hostname: s.hostname(), AgentVersion: s.version(), Inventory: &inv})
	_, err := s.client.Heartbeat(ctx, s.id, s.token, body)
	var apiErr *agent.APIError
	switch {
	case err == nil || ctx.Err() != nil:
		return ctx.Err() == nil
	case errors.As(err, &apiErr) && (apiErr.Code == "agent_revoked" || apiErr.Code == "agent_stale" || apiErr.Code == "unknown_agent"):
		// An admin revoked it in the playground, say: this machine stops, as a real agent would.
		s.log.Info("demo agent stops", "host", s.hostname(), "agent_id", s.id, "code", apiErr.Code)
		return false
	default:
		s.log.Warn("demo heartbeat failed", "host", s.hostname(), "err", err)
		return true
	}
}

var (
	roles = []string{"web", "db", "app", "build", "fin-ws", "hr-ws", "pos", "kiosk", "file", "mail", "dev-ws", "cam"}
	oses  = []agent.OS{
		{Name: "Ubuntu", Version: "24.04", Kernel: "6.8.0-45-generic", Arch: "amd64"},
		{Name: "Ubuntu", Version: "22.04", Kernel: "5.15.0-119-generic", Arch: "amd64"},
		{Name: "Debian GNU/Linux", Version: "12", Kernel: "6.1.0-25-amd64", Arch: "amd64"},
		{Name: "Windows Server", Version: "2022", Kernel: "10.0.20348", Arch: "amd64"},
		{Name: "Windows 11 Pro", Version: "23H2", Kernel: "10.0.22631", Arch: "amd64"},
		{Name: "macOS", Version: "14.6", Kernel: "23.6.0", Arch: "arm64"},
		{Name: "Red Hat Enterprise Linux", Version: "9.4", Kernel: "5.14.0-427.el9.x86_64", Arch: "amd64"},
		{Name: "Alpine Linux", Version: "3.20", Kernel: "6.6.49-0-lts", Arch: "arm64"},
	}
)

func (s *simAgent) hostname() string {
	site := "hq"
	if s.n >= hqAgents {
		site = "br"
	}
	return fmt.Sprintf("%s-%s-%02d", site, roles[s.n%len(roles)], s.n)
}

func (s *simAgent) version() string { return []string{"0.6.0", "0.6.0", "0.5.2"}[s.n%3] }

func (s *simAgent) inventory() agent.Inventory {
	o := oses[s.n%len(oses)]
	subnet := 10
	if s.n >= hqAgents {
		subnet = 20
	}
	return agent.Inventory{
		OS:            &o,
		IPAddresses:   []string{fmt.Sprintf("10.%d.0.%d", subnet, 10+s.n)},
		MACAddresses:  []string{fmt.Sprintf("02:42:ac:%02x:00:%02x", subnet, s.n)},
		CPUCount:      []int{2, 4, 8, 16}[s.n%4],
		MemoryBytes:   float64(int64(4<<(s.n%4)) << 30),
		UptimeSeconds: float64(3600*(1+s.n) + 7*s.seq),
		Facts:         map[string]string{"demo": "true", "role": roles[s.n%len(roles)]},
	}
}

func randDuration(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo+1) }
