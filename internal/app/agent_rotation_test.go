package app_test

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The agent rotates its own credential: before the maximum age, at once when told
// credential_expired, and it never ends up without a working token when a rotation is
// interrupted. The agent runs on the server's test clock.
func TestAgentRotatesItsCredential(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const maxAge = 30 * 24 * time.Hour
		env := testenv.New(t, dsn, func(c *app.Config) {
			c.AgentCredentialMaxAge = maxAge
			c.AgentCredentialGrace = time.Hour
			c.StaleAfter = 365 * 24 * time.Hour
		})
		ten := env.Tenant("RotateCo") // each case mints its own enrollment token: the clock moves a lot
		site := env.Site(ten, "HQ")
		var rotations atomic.Int32
		base := agent.Config{Server: env.Server.URL, Interval: 20 * time.Millisecond, Now: env.Clock.Now,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			OnRotate: func(string) { rotations.Add(1) }}
		state := func(dir string) *agent.State {
			st, err := agent.LoadState(dir)
			if err != nil || st == nil {
				t.Fatalf("state: %v %v", st, err)
			}
			return st
		}
		works := func(st *agent.State, token string) bool {
			return env.Do(http.MethodPost, hbPath(st.AgentID), token, map[string]any{"hostname": "probe"}).Status == 200
		}
		rotationEvents := func(agentID string) int {
			return len(enrEvents(env, ten.AdminToken, agentID, "agent.credential.rotated"))
		}

		t.Run("before the maximum age", func(t *testing.T) {
			rotations.Store(0)
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "agent")
			cfg.EnrollmentToken, cfg.MachineID, cfg.Once = env.EnrollmentToken(ten, site, nil, 1), "m-before", true
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("enroll and beat: %v %v", err, beats)
			}
			first := state(cfg.StateDir)
			if first.TokenIssuedAt.IsZero() || first.PreviousToken != "" || rotations.Load() != 0 {
				t.Fatalf("fresh state: %+v, %d rotations", first, rotations.Load())
			}
			// Half the lifetime: not yet.
			env.Clock.Advance(maxAge / 2)
			if err, _ := runAgent(t, cfg, 1); err != nil || rotations.Load() != 0 {
				t.Fatalf("rotated at half the lifetime: %v, %d", err, rotations.Load())
			}
			// Past two thirds: the next accepted heartbeat triggers the rotation, the heartbeat
			// after it proves the new token and the old one is let go.
			env.Clock.Advance(maxAge/6 + time.Hour)
			cfg.Once = false
			if err, beats := runAgent(t, cfg, 2); err != nil || len(beats) != 2 {
				t.Fatalf("run: %v %v", err, beats)
			}
			after := state(cfg.StateDir)
			if rotations.Load() != 1 || after.Token == first.Token || after.PreviousToken != "" ||
				!after.TokenIssuedAt.Equal(env.Clock.Now()) {
				t.Fatalf("after rotating: %d rotations, state %+v", rotations.Load(), after)
			}
			if !works(after, after.Token) || !works(after, first.Token) {
				t.Fatal("the new token, or the old one within its grace period, does not work")
			}
			env.Clock.Advance(time.Hour)
			if works(after, first.Token) {
				t.Fatal("the old token works past the grace period")
			}
			if n := rotationEvents(after.AgentID); n != 1 {
				t.Fatalf("%d rotation events", n)
			}
		})

		t.Run("told credential_expired", func(t *testing.T) {
			rotations.Store(0)
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "agent")
			cfg.EnrollmentToken, cfg.MachineID, cfg.Once = env.EnrollmentToken(ten, site, nil, 1), "m-expired", true
			if err, _ := runAgent(t, cfg, 1); err != nil {
				t.Fatal(err)
			}
			first := state(cfg.StateDir)
			env.Clock.Advance(maxAge + time.Hour) // the agent was off for longer than the maximum age
			if works(first, first.Token) {
				t.Fatal("an over-age token works")
			}
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 || rotations.Load() != 1 {
				t.Fatalf("run: %v, beats %v, %d rotations", err, beats, rotations.Load())
			}
			if st := state(cfg.StateDir); st.Token == first.Token || st.PreviousToken != "" || !works(st, st.Token) {
				t.Fatalf("state after recovering: %+v", st)
			}
		})

		t.Run("the answer to a rotation is lost", func(t *testing.T) {
			// The server rotated, but the agent never saved the new token (it crashed, or the
			// answer was lost): the old token still works for the grace period, its heartbeat
			// answers say so, and the agent rotates again at once.
			rotations.Store(0)
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "agent")
			cfg.EnrollmentToken, cfg.MachineID, cfg.Once = env.EnrollmentToken(ten, site, nil, 1), "m-lost", true
			if err, _ := runAgent(t, cfg, 1); err != nil {
				t.Fatal(err)
			}
			first := state(cfg.StateDir)
			if r := credRotate(t, env, first.AgentID, first.Token); r.Status != 200 {
				t.Fatalf("rotate: %d %s", r.Status, r.Body)
			}
			// The first answer reports the shortened expiry and the agent rotates after it (the
			// test stops the agent at the second accepted heartbeat).
			cfg.Once = false
			if err, beats := runAgent(t, cfg, 2); err != nil || len(beats) != 2 || rotations.Load() != 1 {
				t.Fatalf("run: %v, beats %v, %d rotations", err, beats, rotations.Load())
			}
			st := state(cfg.StateDir)
			if st.Token == first.Token || st.PreviousToken != "" || !works(st, st.Token) {
				t.Fatalf("state: %+v", st)
			}
			env.Clock.Advance(2 * time.Hour) // every superseded token is gone now
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 || rotations.Load() != 1 {
				t.Fatalf("after the grace period: %v %v, %d rotations", err, beats, rotations.Load())
			}
		})

		t.Run("the rotated token is refused", func(t *testing.T) {
			// A state file written in the middle of a rotation whose new token the server
			// does not know (say the database was restored from a backup taken before it): the
			// agent goes back to the previous token.
			cfg := base
			cfg.StateDir = filepath.Join(t.TempDir(), "agent")
			cfg.EnrollmentToken, cfg.MachineID, cfg.Once = env.EnrollmentToken(ten, site, nil, 1), "m-refused", true
			if err, _ := runAgent(t, cfg, 1); err != nil {
				t.Fatal(err)
			}
			st := state(cfg.StateDir)
			good := st.Token
			st.Token, st.PreviousToken = "opsa_unknowntoken", good
			if err := agent.SaveState(cfg.StateDir, st); err != nil {
				t.Fatal(err)
			}
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("run: %v %v", err, beats)
			}
			if st := state(cfg.StateDir); st.Token != good || st.PreviousToken != "" {
				t.Fatalf("state: %+v", st)
			}
		})
	})
}
