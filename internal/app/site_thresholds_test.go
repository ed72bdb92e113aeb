package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Per-site thresholds: updateSite sets a site's own offline and stale windows; online,
// fleetSummary, the asset filters and counts, and the stale sweeper follow them, and sites
// without their own keep the server's defaults.

const siteUpdate = `mutation($id: ID!, $in: UpdateSiteInput!) { updateSite(id: $id, input: $in) { id name offlineAfterSeconds staleAfterSeconds } }`

func siteBeat(t *testing.T, env *testenv.Env, a *testenv.Agent, viaGQL bool) {
	t.Helper()
	if viaGQL {
		env.MustGQL(a.Token, submitMutation, map[string]any{"agentId": a.ID, "input": map[string]any{"hostname": "h"}})
		return
	}
	if r := env.Do(http.MethodPost, hbPath(a.ID), a.Token, map[string]any{"hostname": "h"}); r.Status != 200 {
		t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
	}
}

func TestUpdateSite(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn) // defaults: offline 180 s, stale 168 h
		ten := env.Tenant("Sites")
		other := env.Tenant("Other")
		hq := env.Site(ten, "HQ")
		env.Site(ten, "Branch")
		foreign := env.Site(other, "Theirs")
		admin := ten.AdminToken

		d := env.MustGQL(admin, siteUpdate, map[string]any{"id": hq, "in": map[string]any{}})["updateSite"].(map[string]any)
		if d["offlineAfterSeconds"] != float64(180) || d["staleAfterSeconds"] != float64(168*3600) || d["name"] != "HQ" {
			t.Fatalf("defaults: %v", d)
		}
		d = env.MustGQL(admin, siteUpdate, map[string]any{"id": hq, "in": map[string]any{"name": " Servers ",
			"offlineAfterSeconds": 900, "staleAfterSeconds": 30 * 24 * 3600}})["updateSite"].(map[string]any)
		if d["name"] != "Servers" || d["offlineAfterSeconds"] != float64(900) || d["staleAfterSeconds"] != float64(30*24*3600) {
			t.Fatalf("updated: %v", d)
		}
		// Leaving a field out keeps it; the listing shows the site's own values.
		env.MustGQL(admin, siteUpdate, map[string]any{"id": hq, "in": map[string]any{"offlineAfterSeconds": 600}})
		sites := env.MustGQL(ten.ViewerToken, `{ sites { id name offlineAfterSeconds staleAfterSeconds } }`, nil)["sites"].([]any)
		for _, s := range sites {
			s := s.(map[string]any)
			want := []float64{180, 168 * 3600}
			if s["id"] == hq {
				want = []float64{600, 30 * 24 * 3600}
			}
			if s["offlineAfterSeconds"] != want[0] || s["staleAfterSeconds"] != want[1] {
				t.Fatalf("site %v: want %v", s, want)
			}
		}

		for _, tc := range []struct {
			name  string
			token string
			id    string
			in    map[string]any
			code  string
			field string
		}{
			{"a viewer", ten.ViewerToken, hq, map[string]any{"name": "x"}, "FORBIDDEN", ""},
			{"another tenant's site", admin, foreign, map[string]any{"name": "mine"}, "NOT_FOUND", ""},
			{"an unknown site", admin, "01a230fe-6399-7d35-a7cf-4bf4425b53aa", map[string]any{"name": "x"}, "NOT_FOUND", ""},
			{"a malformed id", admin, "nope", map[string]any{"name": "x"}, "NOT_FOUND", ""},
			{"an empty name", admin, hq, map[string]any{"name": "  "}, "INVALID_REQUEST", "name"},
			{"a taken name", admin, hq, map[string]any{"name": "Branch"}, "CONFLICT", "name"},
			{"a negative offline window", admin, hq, map[string]any{"offlineAfterSeconds": -1}, "INVALID_REQUEST", "offlineAfterSeconds"},
			{"an offline window over a year", admin, hq, map[string]any{"offlineAfterSeconds": 366 * 24 * 3600}, "INVALID_REQUEST", "offlineAfterSeconds"},
			{"a negative stale window", admin, hq, map[string]any{"staleAfterSeconds": -5}, "INVALID_REQUEST", "staleAfterSeconds"},
			{"stale not longer than offline", admin, hq, map[string]any{"staleAfterSeconds": 600}, "INVALID_REQUEST", "staleAfterSeconds"},
			{"offline past the site's stale window", admin, hq, map[string]any{"offlineAfterSeconds": 31 * 24 * 3600}, "INVALID_REQUEST", "offlineAfterSeconds"},
			{"an Int over 32 bits", admin, hq, map[string]any{"offlineAfterSeconds": 1 << 40}, "INVALID_REQUEST", ""},
		} {
			r := env.GQL(tc.token, siteUpdate, map[string]any{"id": tc.id, "in": tc.in})
			if r.Code() != tc.code || (tc.field != "" && r.Errors[0].Extensions["field"] != tc.field) {
				t.Errorf("%s: %s; want %s %s", tc.name, r.Raw, tc.code, tc.field)
			}
		}
		// Nothing the refusals tried was written; the foreign site is untouched.
		d = env.MustGQL(admin, siteUpdate, map[string]any{"id": hq, "in": map[string]any{}})["updateSite"].(map[string]any)
		if d["name"] != "Servers" || d["offlineAfterSeconds"] != float64(600) || d["staleAfterSeconds"] != float64(30*24*3600) {
			t.Fatalf("after the refusals: %v", d)
		}
		if s := env.MustGQL(other.AdminToken, `{ sites { name } }`, nil)["sites"].([]any); s[0].(map[string]any)["name"] != "Theirs" {
			t.Fatalf("the foreign site changed: %v", s)
		}
		// 0 goes back to the server's defaults.
		d = env.MustGQL(admin, siteUpdate, map[string]any{"id": hq, "in": map[string]any{"offlineAfterSeconds": 0, "staleAfterSeconds": 0}})["updateSite"].(map[string]any)
		if d["offlineAfterSeconds"] != float64(180) || d["staleAfterSeconds"] != float64(168*3600) {
			t.Fatalf("reset: %v", d)
		}
	})
}

func TestSiteOfflineWindow(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.OfflineAfter = 180 * time.Second })
		ten := env.Tenant("Windows")
		servers, desks := env.Site(ten, "Servers"), env.Site(ten, "Workstations")
		admin := ten.AdminToken
		// Servers go offline after 60 s, workstations after 30 minutes; a third site keeps 180 s.
		env.MustGQL(admin, siteUpdate, map[string]any{"id": servers, "in": map[string]any{"offlineAfterSeconds": 60}})
		env.MustGQL(admin, siteUpdate, map[string]any{"id": desks, "in": map[string]any{"offlineAfterSeconds": 1800}})
		plain := env.Site(ten, "Plain")
		srv := env.Enroll(env.EnrollmentToken(ten, servers, nil, 1), "srv", "")
		desk := env.Enroll(env.EnrollmentToken(ten, desks, nil, 1), "desk", "")
		pl := env.Enroll(env.EnrollmentToken(ten, plain, nil, 1), "plain", "")
		siteBeat(t, env, srv, false)
		siteBeat(t, env, desk, true)
		siteBeat(t, env, pl, false)

		type view struct {
			online                             map[string]bool
			summaryOnline, summaryOffline      float64
			onlineCount, offlineCount          float64
			onlineListed                       int
			serversOnline, serversOnlineListed float64
		}
		read := func() view {
			d := env.MustGQL(ten.ViewerToken, `query($s: ID!) {
				assets(first: 50) { edges { node { id online } } }
				on: assets(filter: {online: true}) { totalCount edges { node { id } } }
				off: assets(filter: {online: false}) { totalCount }
				fleetSummary { online offline }
				srv: fleetSummary(siteId: $s) { online }
				srvOn: assets(filter: {online: true, siteId: $s}) { totalCount }
			}`, map[string]any{"s": servers})
			v := view{online: map[string]bool{}}
			for _, e := range d["assets"].(map[string]any)["edges"].([]any) {
				n := e.(map[string]any)["node"].(map[string]any)
				v.online[n["id"].(string)] = n["online"].(bool)
			}
			on := d["on"].(map[string]any)
			v.onlineCount, v.onlineListed = on["totalCount"].(float64), len(on["edges"].([]any))
			v.offlineCount = d["off"].(map[string]any)["totalCount"].(float64)
			fs := d["fleetSummary"].(map[string]any)
			v.summaryOnline, v.summaryOffline = fs["online"].(float64), fs["offline"].(float64)
			v.serversOnline = d["srv"].(map[string]any)["online"].(float64)
			v.serversOnlineListed = d["srvOn"].(map[string]any)["totalCount"].(float64)
			return v
		}
		check := func(when string, srvOn, deskOn, plainOn bool) {
			t.Helper()
			v := read()
			want := map[string]bool{srv.AssetID: srvOn, desk.AssetID: deskOn, pl.AssetID: plainOn}
			n := 0.0
			for id, w := range want {
				if v.online[id] != w {
					t.Fatalf("%s: asset %s online %v, want %v (%v)", when, id, v.online[id], w, v.online)
				}
				if w {
					n++
				}
			}
			srvN := 0.0
			if srvOn {
				srvN = 1
			}
			if v.onlineCount != n || v.onlineListed != int(n) || v.offlineCount != 3-n || v.summaryOnline != n ||
				v.summaryOffline != 3-n || v.serversOnline != srvN || v.serversOnlineListed != srvN {
				t.Fatalf("%s: counts %+v, want %v online", when, v, n)
			}
			// The asset itself and the live read agree.
			a := env.MustGQL(ten.ViewerToken, `query($id: ID!) { asset(id: $id) { online } }`, map[string]any{"id": srv.AssetID})
			if a["asset"].(map[string]any)["online"] != srvOn {
				t.Fatalf("%s: asset(id) online %v", when, a["asset"])
			}
		}
		check("just seen", true, true, true)
		env.Clock.Advance(61 * time.Second)
		check("61 s on", false, true, true)
		env.Clock.Advance(120 * time.Second)
		check("181 s on", false, true, false)
		env.Clock.Advance(30 * time.Minute)
		check("31 minutes on", false, false, false)
		siteBeat(t, env, srv, true)
		check("the server beat again", true, false, false)
		// Back to the default window: the server is held to 180 s again.
		env.MustGQL(admin, siteUpdate, map[string]any{"id": servers, "in": map[string]any{"offlineAfterSeconds": 0}})
		env.Clock.Advance(100 * time.Second)
		check("100 s on the default", true, false, false)
	})
}

func TestSiteStaleWindow(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.StaleAfter = 7 * 24 * time.Hour })
		ten := env.Tenant("Stale")
		desks, longLived, plain := env.Site(ten, "Workstations"), env.Site(ten, "Archive"), env.Site(ten, "Plain")
		admin := ten.AdminToken
		env.MustGQL(admin, siteUpdate, map[string]any{"id": desks, "in": map[string]any{"staleAfterSeconds": 2 * 24 * 3600}})
		env.MustGQL(admin, siteUpdate, map[string]any{"id": longLived, "in": map[string]any{"staleAfterSeconds": 30 * 24 * 3600}})
		desk := env.Enroll(env.EnrollmentToken(ten, desks, nil, 1), "desk", "")
		quietDesk := env.Enroll(env.EnrollmentToken(ten, desks, nil, 1), "quiet-desk", "") // never beats
		arch := env.Enroll(env.EnrollmentToken(ten, longLived, nil, 1), "arch", "")
		pl := env.Enroll(env.EnrollmentToken(ten, plain, nil, 1), "plain", "")
		for _, a := range []*testenv.Agent{desk, arch, pl} {
			siteBeat(t, env, a, a == arch)
		}
		sweep := func() int {
			n, err := env.App.Enrollment.Sweep(context.Background(), env.App.Config.StaleAfter)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		status := func(a *testenv.Agent) string { return enrStatus(env, admin, a.ID) }

		env.Clock.Advance(47 * time.Hour)
		if n := sweep(); n != 0 {
			t.Fatalf("%d marked stale at 47 h", n)
		}
		env.Clock.Advance(2 * time.Hour) // 49 h: past the workstations' 2 days only
		if n := sweep(); n != 2 || status(desk) != "STALE" || status(quietDesk) != "STALE" || status(arch) != "ACTIVE" || status(pl) != "ACTIVE" {
			t.Fatalf("at 49 h: %d marked; desk %s, quiet %s, archive %s, plain %s", n, status(desk), status(quietDesk), status(arch), status(pl))
		}
		ev := enrEvents(env, admin, desk.ID, "agent.stale")
		if len(ev) != 1 || enrPayload(ev[0])["stale_after_seconds"] != float64(2*24*3600) {
			t.Fatalf("the stale event does not name the site's window: %v", ev)
		}
		if r := env.Do(http.MethodPost, hbPath(desk.ID), desk.Token, map[string]any{"hostname": "h"}); r.Status != 403 || r.ErrorCode() != "agent_stale" {
			t.Fatalf("a stale workstation's heartbeat: %d %s", r.Status, r.Body)
		}
		env.Clock.Advance(6 * 24 * time.Hour) // 7 days and 1 hour: the default site
		if n := sweep(); n != 1 || status(pl) != "STALE" || status(arch) != "ACTIVE" {
			t.Fatalf("past 7 days: %d marked; plain %s, archive %s", n, status(pl), status(arch))
		}
		if ev := enrEvents(env, admin, pl.ID, "agent.stale"); enrPayload(ev[0])["stale_after_seconds"] != float64(7*24*3600) {
			t.Fatalf("default window event: %v", ev)
		}
		siteBeat(t, env, arch, false) // the archive beats on day 8 ...
		env.Clock.Advance(29 * 24 * time.Hour)
		if n := sweep(); n != 0 || status(arch) != "ACTIVE" {
			t.Fatalf("29 days after its last beat the archive is %s (%d marked)", status(arch), n)
		}
		env.Clock.Advance(2 * 24 * time.Hour) // ... and is stale 30 days after it
		if n := sweep(); n != 1 || status(arch) != "STALE" {
			t.Fatalf("31 days after its last beat: %d marked, archive %s", n, status(arch))
		}
	})
}
