package app_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// syncBuffer is a log sink the agent's goroutine and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestAgentRecovery(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("RecoverCo")
		site := env.Site(ten, "HQ")
		first := env.EnrollmentToken(ten, site, nil, 5)
		stateDir := filepath.Join(t.TempDir(), "agent")
		base := agent.Config{StateDir: stateDir, Interval: 20 * time.Millisecond, MachineID: "recovery-machine",
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Once: true}
		mustState := func() *agent.State {
			st, err := agent.LoadState(stateDir)
			if err != nil || st == nil {
				t.Fatalf("state: %v %v", st, err)
			}
			return st
		}

		cfg := base
		cfg.Server, cfg.EnrollmentToken = env.Server.URL, first
		if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
			t.Fatalf("enroll: %v %v", err, beats)
		}
		enrolled := mustState()
		if strings.Contains(enrolled.EnrollmentTokenSHA256, first) || enrolled.EnrollmentTokenSHA256 == "" {
			t.Fatalf("state keeps %q for the enrollment token", enrolled.EnrollmentTokenSHA256)
		}

		t.Run("the stored server is the default for --server", func(t *testing.T) {
			cfg := base // no Server, no token
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
		})

		t.Run("another --server without a token is a clear error, not a 401", func(t *testing.T) {
			other := testenv.New(t, testenv.NewSQLite(t))
			cfg := base
			cfg.Server = other.Server.URL
			err, _ := runAgent(t, cfg, 1)
			if err == nil || !strings.Contains(err.Error(), env.Server.URL) || !strings.Contains(err.Error(), other.Server.URL) ||
				!strings.Contains(err.Error(), "--enrollment-token") {
				t.Fatalf("Run = %v", err)
			}
			if mustState().AgentID != enrolled.AgentID {
				t.Fatal("the state changed")
			}
		})

		t.Run("connection refused is not logged as a refused heartbeat", func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dead := "http://" + ln.Addr().String()
			ln.Close()
			st := mustState()
			st.Server = dead
			if err := agent.SaveState(stateDir, st); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			cfg := base
			cfg.MaxAttempts = 1
			cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
			err, _ = runAgent(t, cfg, 1)
			if err == nil || strings.Contains(logs.String(), "heartbeat refused") || !strings.Contains(logs.String(), "cannot be reached") {
				t.Fatalf("Run = %v, log:\n%s", err, logs.String())
			}
			st.Server = env.Server.URL
			if err := agent.SaveState(stateDir, st); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("after a revoke the same token stops, a new one re-enrolls", func(t *testing.T) {
			env.MustGQL(ten.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "test") { status } }`,
				map[string]any{"a": enrolled.AgentID})
			cfg := base
			cfg.EnrollmentToken = first
			err, _ := runAgent(t, cfg, 1)
			var stop *agent.StopError
			if !errors.As(err, &stop) || stop.Code != "agent_revoked" {
				t.Fatalf("with the token it enrolled with: Run = %v, want agent_revoked", err)
			}
			cfg.EnrollmentToken = env.EnrollmentToken(ten, site, nil, 1)
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("with a new token: err %v, beats %v", err, beats)
			}
			after := mustState()
			if after.AgentID == enrolled.AgentID || after.AssetID != enrolled.AssetID {
				t.Fatalf("re-enrolled as %s on asset %s; want a new identity on asset %s", after.AgentID, after.AssetID, enrolled.AssetID)
			}
		})

		t.Run("another --server with a token enrolls there", func(t *testing.T) {
			other := testenv.New(t, testenv.NewSQLite(t))
			oten := other.Tenant("Elsewhere")
			cfg := base
			cfg.Server = other.Server.URL
			cfg.EnrollmentToken = other.EnrollmentToken(oten, other.Site(oten, "Branch"), nil, 1)
			if err, beats := runAgent(t, cfg, 1); err != nil || len(beats) != 1 {
				t.Fatalf("err %v, beats %v", err, beats)
			}
			if st := mustState(); st.Server != other.Server.URL || st.TenantID != oten.ID {
				t.Fatalf("state: server %s tenant %s", st.Server, st.TenantID)
			}
		})
	})
}
