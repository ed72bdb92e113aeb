package app_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/clones"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Clone detection: one credential used by two live machines is flagged for review; one
// machine that rebooted or was re-imaged is not.

// machine is one computer using an agent's credential: its boot and its MAC set.
type machine struct {
	boot time.Time
	macs []string
}

// cloneRig sends heartbeats as machines over one transport.
type cloneRig struct {
	t         *testing.T
	env       *testenv.Env
	transport string // "rest" or "graphql"
	n         int
}

// beat sends one heartbeat from m with agent a's credential, sent at sentAt (the clock's now
// when zero), and returns the HTTP status (GraphQL: 200, or 409 for IDENTITY_CONFLICT) and
// the error code, lower case.
func (r *cloneRig) beat(a *testenv.Agent, m machine, sentAt time.Time) (int, string) {
	r.t.Helper()
	r.n++
	now := r.env.Clock.Now()
	if sentAt.IsZero() {
		sentAt = now
	}
	hbID := fmt.Sprintf("clone-%s-%d", r.transport, r.n)
	uptime := now.Sub(m.boot).Seconds()
	macs := make([]any, len(m.macs))
	for i, v := range m.macs {
		macs[i] = v
	}
	if r.transport == "rest" {
		resp := r.env.Do(http.MethodPost, hbPath(a.ID), a.Token, map[string]any{"heartbeat_id": hbID,
			"sent_at": sentAt.Format(time.RFC3339Nano), "inventory": map[string]any{"uptime_seconds": uptime, "mac_addresses": macs}})
		return resp.Status, resp.ErrorCode()
	}
	res := r.env.GQL(a.Token, submitMutation, map[string]any{"agentId": a.ID, "input": map[string]any{"heartbeatId": hbID,
		"sentAt": sentAt.Format(time.RFC3339Nano), "inventory": map[string]any{"uptimeSeconds": uptime, "macAddresses": macs}}})
	switch c := res.Code(); c {
	case "":
		return http.StatusOK, ""
	case "IDENTITY_CONFLICT":
		return http.StatusConflict, "identity_conflict"
	default:
		return res.Status, c
	}
}

// accept sends beats that must be accepted, the clock moving 20s before each.
func (r *cloneRig) accept(a *testenv.Agent, ms ...machine) {
	r.t.Helper()
	for i, m := range ms {
		r.env.Clock.Advance(20 * time.Second)
		if status, code := r.beat(a, m, time.Time{}); status != http.StatusOK {
			r.t.Fatalf("%s heartbeat %d: %d %s", r.transport, i, status, code)
		}
	}
}

// refused sends a beat that must be answered 409 identity_conflict.
func (r *cloneRig) refused(a *testenv.Agent, m machine) {
	r.t.Helper()
	r.env.Clock.Advance(20 * time.Second)
	if status, code := r.beat(a, m, time.Time{}); status != http.StatusConflict || code != "identity_conflict" {
		r.t.Fatalf("%s heartbeat from the refused machine: %d %s, want 409 identity_conflict", r.transport, status, code)
	}
}

const conflictQuery = `query($a: ID!) { agentIdentity(agentId: $a) { lastSeenAt asset { macAddresses }
  conflict { detectedAt fingerprints { id machineId bootTime macAddresses firstSeenAt lastSeenAt } } } }`

func conflictOf(t *testing.T, env *testenv.Env, token, agentID string) (conflict map[string]any, identity map[string]any) {
	t.Helper()
	id := env.MustGQL(token, conflictQuery, map[string]any{"a": agentID})["agentIdentity"].(map[string]any)
	c, _ := id["conflict"].(map[string]any)
	return c, id
}

func flaggedIdentities(t *testing.T, env *testenv.Env, token string) (ids []string, count float64) {
	t.Helper()
	d := env.MustGQL(token, `{ agentIdentities(filter: {conflict: true}) { totalCount edges { node { agentId conflict { fingerprints { id } } } } }
	  others: agentIdentities(filter: {conflict: false}) { edges { node { agentId conflict { detectedAt } } } }
	  fleetSummary { conflicts } }`, nil)
	for _, e := range d["agentIdentities"].(map[string]any)["edges"].([]any) {
		n := e.(map[string]any)["node"].(map[string]any)
		if c, _ := n["conflict"].(map[string]any); c == nil || len(c["fingerprints"].([]any)) < 2 {
			t.Fatalf("a listed identity shows the conflict %v", n["conflict"])
		}
		ids = append(ids, n["agentId"].(string))
	}
	others := d["others"].(map[string]any)["edges"].([]any)
	for _, e := range others {
		if n := e.(map[string]any)["node"].(map[string]any); n["conflict"] != nil {
			t.Fatalf("conflict: false lists %v", n)
		}
	}
	if n := d["agentIdentities"].(map[string]any)["totalCount"].(float64); n != float64(len(ids)) {
		t.Fatalf("totalCount %v for %d edges", n, len(ids))
	}
	return ids, d["fleetSummary"].(map[string]any)["conflicts"].(float64)
}

func conflictEvents(t *testing.T, env *testenv.Env, token, agentID, typ string) []any {
	t.Helper()
	d := env.MustGQL(token, `query($a: ID, $t: String) { events(filter: {agentId: $a, type: $t}) { edges { node { type payload } } } }`,
		map[string]any{"a": agentID, "t": typ})
	return d["events"].(map[string]any)["edges"].([]any)
}

func eventCount(t *testing.T, env *testenv.Env, token, agentID string) float64 {
	t.Helper()
	d := env.MustGQL(token, `query($a: ID) { events(filter: {agentId: $a}) { totalCount } }`, map[string]any{"a": agentID})
	return d["events"].(map[string]any)["totalCount"].(float64)
}

// Two machines with one state file (a copied disk): the same token from two boots and MAC
// sets, alternating. Flagged, listed, counted, told once; resolving keeps one machine and
// refuses the other from then on.
func TestCloneCopiedDisk(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		for _, transport := range []string{"rest", "graphql"} {
			t.Run(transport, func(t *testing.T) {
				f := env.NewFleet("Copied " + transport)
				admin := f.Tenant.AdminToken
				tok := env.EnrollmentToken(f.Tenant, f.SiteID, nil, 5)
				healthy := env.Enroll(tok, "healthy", "m-healthy")
				f.Agent = env.Enroll(tok, "copied", "m-copied") // the agent on the copied disk
				r := &cloneRig{t: t, env: env, transport: transport}
				now := env.Clock.Now()
				a := machine{boot: now.Add(-time.Hour), macs: []string{"02:00:00:00:00:0a"}}
				b := machine{boot: now.Add(-26 * time.Hour), macs: []string{"02:00:00:00:00:0b", "02:00:00:00:00:0c"}}
				r.accept(healthy, a, a)

				r.accept(f.Agent, a, a, b)
				if c, _ := conflictOf(t, env, admin, f.Agent.ID); c != nil {
					t.Fatalf("flagged before any alternation: %v", c)
				}
				r.accept(f.Agent, a) // A, B, A: two live machines
				c, _ := conflictOf(t, env, admin, f.Agent.ID)
				if c == nil {
					t.Fatal("A, B, A is not flagged")
				}
				fps := c["fingerprints"].([]any)
				if len(fps) != 2 {
					t.Fatalf("fingerprints %v, want 2", fps)
				}
				fa, fb := fps[0].(map[string]any), fps[1].(map[string]any)
				if fa["bootTime"] != a.boot.UTC().Format(time.RFC3339) || fb["bootTime"] != b.boot.UTC().Format(time.RFC3339) {
					t.Fatalf("fingerprints (oldest first) boot at %v and %v, want %v and %v", fa["bootTime"], fb["bootTime"], a.boot, b.boot)
				}
				if fmt.Sprint(fb["macAddresses"]) != "[02:00:00:00:00:0b 02:00:00:00:00:0c]" || fa["machineId"] != "m-copied" || fb["machineId"] != "m-copied" {
					t.Fatalf("fingerprint fields: %v %v", fa, fb)
				}
				if ids, n := flaggedIdentities(t, env, admin); len(ids) != 1 || ids[0] != f.Agent.ID || n != 1 {
					t.Fatalf("conflict filter %v, count %v; want only %s", ids, n, f.Agent.ID)
				}
				// More alternation adds no event: the identity is flagged once.
				r.accept(f.Agent, b, a, b)
				evs := conflictEvents(t, env, admin, f.Agent.ID, "agent.conflict")
				if len(evs) != 1 {
					t.Fatalf("%d agent.conflict events, want 1", len(evs))
				}
				payload := evs[0].(map[string]any)["node"].(map[string]any)["payload"].(map[string]any)
				named := payload["fingerprints"].([]any)
				if len(named) != 2 || named[0].(map[string]any)["id"] != fa["id"] || named[1].(map[string]any)["id"] != fb["id"] {
					t.Fatalf("the event names %v, want both fingerprints", named)
				}

				// Resolving: a viewer may not; keep must be one of the conflict's fingerprints.
				viewer := f.Tenant.ViewerToken
				const resolve = `mutation($a: ID!, $k: ID!) { resolveAgentConflict(agentId: $a, keep: $k) { agentId conflict { detectedAt } } }`
				if code := env.GQL(viewer, resolve, map[string]any{"a": f.Agent.ID, "k": fa["id"]}).Code(); code != "FORBIDDEN" {
					t.Fatalf("a viewer resolves: %s", code)
				}
				if code := env.GQL(admin, resolve, map[string]any{"a": f.Agent.ID, "k": "0192f0c4-0000-7000-8000-000000000000"}).Code(); code != "INVALID_REQUEST" {
					t.Fatalf("keep of no fingerprint: %s", code)
				}
				// Another tenant sees nothing of it and cannot resolve it.
				foreign := env.Tenant("Foreign " + transport)
				if code := env.GQL(foreign.AdminToken, resolve, map[string]any{"a": f.Agent.ID, "k": fa["id"]}).Code(); code != "NOT_FOUND" {
					t.Fatalf("another tenant resolves: %s", code)
				}
				if ids, n := flaggedIdentities(t, env, foreign.AdminToken); len(ids) != 0 || n != 0 {
					t.Fatalf("another tenant sees the conflict: %v %v", ids, n)
				}
				if code := env.GQL(admin, resolve, map[string]any{"a": healthy.ID, "k": fa["id"]}).Code(); code != "CONFLICT" {
					t.Fatalf("resolving an identity without a conflict: %s", code)
				}
				d := env.MustGQL(admin, resolve, map[string]any{"a": f.Agent.ID, "k": fa["id"]})["resolveAgentConflict"].(map[string]any)
				if d["conflict"] != nil {
					t.Fatalf("still in conflict after resolving: %v", d)
				}
				if ids, n := flaggedIdentities(t, env, admin); len(ids) != 0 || n != 0 {
					t.Fatalf("after resolving: filter %v, count %v", ids, n)
				}
				if evs := conflictEvents(t, env, admin, f.Agent.ID, "agent.conflict.resolved"); len(evs) != 1 {
					t.Fatalf("%d agent.conflict.resolved events", len(evs))
				}
				// B is refused from now on, and nothing of its heartbeats is written; A goes on.
				_, before := conflictOf(t, env, admin, f.Agent.ID)
				events := eventCount(t, env, admin, f.Agent.ID)
				r.refused(f.Agent, b)
				r.refused(f.Agent, b)
				_, after := conflictOf(t, env, admin, f.Agent.ID)
				if fmt.Sprint(after) != fmt.Sprint(before) || eventCount(t, env, admin, f.Agent.ID) != events {
					t.Fatalf("a refused heartbeat wrote: %v -> %v", before, after)
				}
				r.accept(f.Agent, a, a)
				if _, after := conflictOf(t, env, admin, f.Agent.ID); after["lastSeenAt"] == before["lastSeenAt"] {
					t.Fatal("the kept machine's heartbeats are not recorded")
				}
				r.refused(f.Agent, b)
				if _, n := flaggedIdentities(t, env, admin); n != 0 {
					t.Fatalf("flagged again: %v", n)
				}
			})
		}
	})
}

// A VM template with the agent's state booted twice: the same machine id and MAC set, two
// boot times, both alive.
func TestCloneVMTemplate(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		for _, transport := range []string{"rest", "graphql"} {
			t.Run(transport, func(t *testing.T) {
				f := env.NewFleet("Template " + transport)
				r := &cloneRig{t: t, env: env, transport: transport}
				now := env.Clock.Now()
				macs := []string{"52:54:00:12:34:56"}
				first, second := machine{now.Add(-10 * time.Minute), macs}, machine{now.Add(-3 * time.Minute), macs}
				r.accept(f.Agent, first, second, first, second)
				c, _ := conflictOf(t, env, f.Tenant.AdminToken, f.Agent.ID)
				if c == nil || len(c["fingerprints"].([]any)) != 2 {
					t.Fatalf("the template's two boots are not flagged: %v", c)
				}
			})
		}
	})
}

// One machine rebooting, and re-imaged (a new MAC set too), with a heartbeat from before the
// reboot arriving late: never flagged.
func TestCloneRebootIsNotAConflict(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		for _, transport := range []string{"rest", "graphql"} {
			t.Run(transport, func(t *testing.T) {
				f := env.NewFleet("Reboot " + transport)
				r := &cloneRig{t: t, env: env, transport: transport}
				macs := []string{"02:00:00:00:01:01"}
				start := env.Clock.Now()
				old := machine{start.Add(-48 * time.Hour), macs}
				r.accept(f.Agent, old, old, old)
				sentBefore := env.Clock.Now()
				rebooted := machine{env.Clock.Now().Add(5 * time.Second), macs}
				r.accept(f.Agent, rebooted, rebooted)
				// A heartbeat sent before the reboot, retried only now.
				env.Clock.Advance(20 * time.Second)
				if status, code := r.beat(f.Agent, old, sentBefore); status != http.StatusOK {
					t.Fatalf("late heartbeat: %d %s", status, code)
				}
				r.accept(f.Agent, rebooted, rebooted)
				reimaged := machine{env.Clock.Now().Add(10 * time.Second), []string{"02:00:00:00:02:02"}}
				r.accept(f.Agent, reimaged, reimaged, reimaged)
				for i := 0; i < 6; i++ { // more reboots than the history keeps
					m := machine{env.Clock.Now().Add(10 * time.Second), macs}
					r.accept(f.Agent, m, m)
				}
				if c, _ := conflictOf(t, env, f.Tenant.AdminToken, f.Agent.ID); c != nil {
					t.Fatalf("a rebooted machine is flagged: %v", c)
				}
				var kept int
				if err := env.App.Store.R.NewRaw(`SELECT COUNT(*) FROM identity_fingerprints AS f JOIN agent_identities AS i
				  ON i.ref = f.agent_ref WHERE i.agent_id = ?`, f.Agent.ID).Scan(context.Background(), &kept); err != nil || kept > clones.MaxNormal {
					t.Fatalf("%d fingerprints kept for one machine (at most %d): %v", kept, clones.MaxNormal, err)
				}
				if evs := conflictEvents(t, env, f.Tenant.AdminToken, f.Agent.ID, "agent.conflict"); len(evs) != 0 {
					t.Fatalf("agent.conflict for a reboot: %v", evs)
				}
			})
		}
	})
}

// --on-identity-conflict=refuse: once flagged, the newer machine is answered 409
// identity_conflict and nothing of its heartbeats is written; the older one goes on.
func TestCloneRefuseMode(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.OnIdentityConflict = clones.Refuse })
		for _, transport := range []string{"rest", "graphql"} {
			t.Run(transport, func(t *testing.T) {
				f := env.NewFleet("Refuse " + transport)
				admin := f.Tenant.AdminToken
				r := &cloneRig{t: t, env: env, transport: transport}
				now := env.Clock.Now()
				older := machine{now.Add(-5 * time.Hour), []string{"02:00:00:00:03:01"}}
				newer := machine{now.Add(-2 * time.Hour), []string{"02:00:00:00:03:02"}}
				r.accept(f.Agent, older, newer, older)
				if c, _ := conflictOf(t, env, admin, f.Agent.ID); c == nil {
					t.Fatal("not flagged")
				}
				_, before := conflictOf(t, env, admin, f.Agent.ID)
				events := eventCount(t, env, admin, f.Agent.ID)
				r.refused(f.Agent, newer)
				r.refused(f.Agent, newer)
				_, after := conflictOf(t, env, admin, f.Agent.ID)
				if fmt.Sprint(after) != fmt.Sprint(before) || eventCount(t, env, admin, f.Agent.ID) != events {
					t.Fatalf("a refused heartbeat wrote: %v -> %v", before, after)
				}
				r.accept(f.Agent, older, older)
				r.refused(f.Agent, newer)
			})
		}
	})
}

// The copied machine's clock runs ten minutes behind: its heartbeats always look older than
// the other's, so the other keeps the fast path (which never looks at fingerprints). The
// conflict is found all the same.
func TestCloneClockBehind(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		for _, transport := range []string{"rest", "graphql"} {
			t.Run(transport, func(t *testing.T) {
				f := env.NewFleet("Skew " + transport)
				r := &cloneRig{t: t, env: env, transport: transport}
				now := env.Clock.Now()
				a := machine{now.Add(-time.Hour), []string{"02:00:00:00:04:01"}}
				b := machine{now.Add(-3 * time.Hour), []string{"02:00:00:00:04:02"}}
				r.accept(f.Agent, a)
				env.Clock.Advance(15 * time.Minute)
				behind := func() {
					env.Clock.Advance(20 * time.Second)
					if status, code := r.beat(f.Agent, b, env.Clock.Now().Add(-10*time.Minute)); status != http.StatusOK {
						t.Fatalf("heartbeat from the machine behind: %d %s", status, code)
					}
				}
				r.accept(f.Agent, a)
				behind()
				r.accept(f.Agent, a, a)
				behind()
				r.accept(f.Agent, a)
				behind()
				if c, _ := conflictOf(t, env, f.Tenant.AdminToken, f.Agent.ID); c == nil {
					t.Fatal("two live machines, one with its clock behind, are not flagged")
				}
			})
		}
	})
}

// The agent on a copied disk: once the server refuses its machine (identity_conflict), it
// enrolls as a new agent under a machine id of its own, leaving the original's identity be.
func TestCloneAgentReenrollsAsNewMachine(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.OnIdentityConflict = clones.Refuse })
		ten := env.Tenant("CopyCo")
		site := env.Site(ten, "HQ")
		tok := env.EnrollmentToken(ten, site, nil, 5)
		dirA := filepath.Join(t.TempDir(), "agent")
		// Each machine's uptime runs with the server's clock, from its own boot.
		inventory := func(up time.Duration, mac string) func() agent.Inventory {
			boot := env.Clock.Now().Add(-up)
			return func() agent.Inventory {
				return agent.Inventory{UptimeSeconds: env.Clock.Now().Sub(boot).Seconds(), MACAddresses: []string{mac}}
			}
		}
		cfgA := agent.Config{Server: env.Server.URL, EnrollmentToken: tok, StateDir: dirA, MachineID: "shared-machine",
			Interval: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Once: true,
			Inventory: inventory(time.Hour, "02:00:00:00:05:01")}
		run := func(cfg agent.Config) {
			t.Helper()
			env.Clock.Advance(20 * time.Second)
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("agent in %s: %v %v", cfg.StateDir, err, beats)
			}
		}
		run(cfgA)
		original, err := agent.LoadState(dirA)
		if err != nil {
			t.Fatal(err)
		}
		// The disk is copied, state and configuration alike; the copy boots on its own.
		dirB := filepath.Join(t.TempDir(), "copy")
		if err := os.CopyFS(dirB, os.DirFS(dirA)); err != nil {
			t.Fatal(err)
		}
		cfgB := cfgA
		cfgB.StateDir, cfgB.Inventory = dirB, inventory(2*time.Hour, "02:00:00:00:05:02")
		run(cfgB)
		run(cfgA) // A, B, A: flagged; B is the newer machine
		if c, _ := conflictOf(t, env, ten.AdminToken, original.AgentID); c == nil {
			t.Fatal("the copied disk is not flagged")
		}
		run(cfgB) // refused, enrolls anew, and its heartbeat is accepted
		copied, err := agent.LoadState(dirB)
		if err != nil {
			t.Fatal(err)
		}
		if copied.AgentID == original.AgentID || copied.MachineID == "shared-machine" || copied.MachineID == "" {
			t.Fatalf("the copy kept agent %s, machine id %q", copied.AgentID, copied.MachineID)
		}
		run(cfgA)
		run(cfgB)
		d := env.MustGQL(ten.AdminToken, `query($a: ID!, $b: ID!) { a: agentIdentity(agentId: $a) { status machineId asset { id } }
		  b: agentIdentity(agentId: $b) { status machineId asset { id } } }`, map[string]any{"a": original.AgentID, "b": copied.AgentID})
		a, b := d["a"].(map[string]any), d["b"].(map[string]any)
		if a["status"] != "ACTIVE" || b["status"] != "ACTIVE" || a["machineId"] != "shared-machine" || b["machineId"] != copied.MachineID ||
			fmt.Sprint(a["asset"]) == fmt.Sprint(b["asset"]) {
			t.Fatalf("after the copy enrolled: original %v, copy %v", a, b)
		}
	})
}
