package app_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// With every place among the heartbeats in flight taken (--max-heartbeats-in-flight 1, held by
// a heartbeat whose body is still on its way), a heartbeat on either transport is refused at
// once, 503 unavailable with Retry-After, and writes nothing; a bad token is still 401 (the
// caller is checked first). Once the load is gone, heartbeats are accepted again, the refused
// one included. On both databases.
func TestHeartbeatsInFlightAreBounded(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.MaxHeartbeatsInFlight = 1 })
		fl := env.NewFleet("Acme")
		slow := fl.Agent
		other := env.Enroll(env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, 1), "other-host", "")
		before := fmt.Sprint(gqlAsset(t, env, fl.Tenant.AdminToken, other.AssetID, other.ID))

		// The slow agent's heartbeat: its head and half its body. The server admits it, then
		// waits for the rest of the body, holding the only place.
		body, _ := json.Marshal(fullBody("hb-slow"))
		u, _ := url.Parse(env.Server.URL)
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			hbPath(slow.ID), u.Host, slow.Token, len(body))
		if _, err := conn.Write(body[:len(body)/2]); err != nil {
			t.Fatal(err)
		}
		inFlight := regexp.MustCompile(`(?m)^oneprotect_heartbeats_in_flight (\d+)$`)
		for {
			m := inFlight.FindStringSubmatch(string(env.Do(http.MethodGet, "/metrics", "", nil).Body))
			if m == nil {
				t.Fatal("/metrics has no oneprotect_heartbeats_in_flight")
			}
			if m[1] == "1" {
				break
			}
		}
		if !strings.Contains(string(env.Do(http.MethodGet, "/metrics", "", nil).Body), "\noneprotect_heartbeats_in_flight_limit 1\n") {
			t.Error("/metrics does not show the bound in force (1)")
		}

		r := env.Do(http.MethodPost, hbPath(other.ID), other.Token, fullBody("hb-shed"))
		if r.Status != http.StatusServiceUnavailable || r.ErrorCode() != "unavailable" || r.Header.Get("Retry-After") != "1" {
			t.Errorf("REST at the bound: want 503 unavailable with Retry-After: 1, got %d %v %s", r.Status, r.Header, r.Body)
		}
		if e, _ := r.JSON["error"].(map[string]any); e == nil || e["message"] == nil || e["message"] == "" {
			t.Errorf("REST at the bound: no message in %s", r.Body)
		}
		g := sendGQL(env, other.Token, nil, other.ID, toGQL(fullBody("hb-shed-gql")))
		if g.code != "UNAVAILABLE" || !strings.Contains(string(g.raw), `"retryAfterSeconds":1`) {
			t.Errorf("GraphQL at the bound: want UNAVAILABLE with retryAfterSeconds 1, got %s", g.raw)
		}
		if r := env.Do(http.MethodPost, hbPath(other.ID), "opsa_not-a-token", fullBody("hb-shed")); r.Status != http.StatusUnauthorized || r.ErrorCode() != "unauthenticated" {
			t.Errorf("a bad token at the bound: want 401 unauthenticated first, got %d %s", r.Status, r.Body)
		}
		if after := fmt.Sprint(gqlAsset(t, env, fl.Tenant.AdminToken, other.AssetID, other.ID)); after != before {
			t.Errorf("refused heartbeats wrote:\nbefore %s\nafter  %s", before, after)
		}

		// The rest of the body: the held heartbeat is answered, and the place is free again.
		if _, err := conn.Write(body[len(body)/2:]); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the held heartbeat: %d", resp.StatusCode)
		}
		for _, id := range []string{"hb-shed", "hb-shed-gql"} {
			if r := env.Do(http.MethodPost, hbPath(other.ID), other.Token, fullBody(id)); r.Status != http.StatusOK || r.JSON["duplicate"] != false {
				t.Errorf("%s once the load is gone: want 200, not a duplicate, got %d %s", id, r.Status, r.Body)
			}
		}
		metrics := string(env.Do(http.MethodGet, "/metrics", "", nil).Body)
		for transport, want := range map[string]int{"rest": 1, "graphql": 1} {
			m := regexp.MustCompile(`(?m)^oneprotect_heartbeats_total\{outcome="unavailable",transport="` + transport + `"\} (\d+)$`).FindStringSubmatch(metrics)
			if m == nil || m[1] != strconv.Itoa(want) {
				t.Errorf("%s heartbeats counted unavailable: %v, want %d", transport, m, want)
			}
		}
		// The server's own handling time is kept by status: the REST refusal apart from the
		// accepted heartbeats and the 401.
		for code, want := range map[string]int{"503": 1, "401": 1, "200": 3} {
			m := regexp.MustCompile(`(?m)^oneprotect_http_request_duration_seconds_count\{code="` + code + `",route="heartbeat"\} (\d+)$`).FindStringSubmatch(metrics)
			if m == nil || m[1] != strconv.Itoa(want) {
				t.Errorf("REST heartbeats handled with %s in the duration histogram: %v, want %d", code, m, want)
			}
		}
	})
}
