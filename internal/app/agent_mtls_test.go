package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The agent with --mtls against a server that enforces mTLS: it enrolls with a CSR (its key
// 0600 in the state directory), heartbeats with its certificate, renews at two thirds of the
// lifetime, and keeps heartbeating across a renewal that fails once.
func TestAgentMTLS(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		var renewals, failed atomic.Int32
		failFirstRenewal := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/certificate") && renewals.Add(1) == 1 {
					failed.Add(1)
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"injected"}}`))
					return
				}
				next.ServeHTTP(w, r)
			})
		}
		env := testenv.NewTLSWith(t, dsn, failFirstRenewal, testenv.RequireMTLS, func(c *app.Config) { c.AgentCertTTL = time.Hour })
		tn := env.Tenant("agent-mtls")
		tok := env.EnrollmentToken(tn, env.Site(tn, "HQ"), nil, 1)
		stateDir := filepath.Join(t.TempDir(), "state")

		type event struct {
			heartbeat bool
			renewErr  error
		}
		events := make(chan event)
		ctx, cancel := context.WithCancel(context.Background())
		emit := func(e event) {
			select { // never blocks the agent once the test has stopped listening
			case events <- e:
			case <-ctx.Done():
			}
		}
		done := make(chan error, 1)
		go func() {
			done <- agent.Run(ctx, agent.Config{Server: env.Server.URL, EnrollmentToken: tok, StateDir: stateDir,
				HTTP: env.Client(nil), MTLS: true, Log: slog.New(slog.NewTextHandler(testLogWriter{t}, nil)), Now: env.Clock.Now, Interval: 20 * time.Millisecond, MachineID: "m-" + testenv.Unique(),
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
				OnHeartbeat: func(string, *agent.HeartbeatResult) { emit(event{heartbeat: true}) },
				OnRenewal:   func(err error) { emit(event{renewErr: err}) }})
		}()
		stop := sync.OnceValue(func() error {
			cancel()
			return <-done
		})
		t.Cleanup(func() { _ = stop() })
		next := func() event {
			t.Helper()
			select {
			case e := <-events:
				return e
			case err := <-done:
				done <- err // for stop
				t.Fatalf("the agent stopped: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("no progress from the agent")
			}
			return event{}
		}
		waitHeartbeats := func(n int) {
			t.Helper()
			for n > 0 {
				if e := next(); e.heartbeat {
					n--
				} else {
					t.Fatalf("unexpected renewal attempt (err %v)", e.renewErr)
				}
			}
		}
		waitHeartbeats(2)
		info, err := os.Stat(filepath.Join(stateDir, agent.KeyFile))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("agent key: %v mode %v", err, info)
		}
		first := serialOnDisk(t, stateDir)

		// Past two thirds of the lifetime: the first renewal fails (injected 503), heartbeats go on
		// with the current certificate, and the next try renews.
		env.Clock.Advance(45 * time.Minute)
		var sawFailure, renewed bool
		for !renewed {
			e := next()
			switch {
			case e.heartbeat && !sawFailure:
				// a heartbeat already on its way when the clock moved
			case e.heartbeat:
				// the old certificate still serves between the failure and the retry
			case e.renewErr != nil:
				if sawFailure {
					t.Fatalf("a second renewal failure: %v", e.renewErr)
				}
				sawFailure = true
			default:
				if !sawFailure {
					t.Fatal("renewed without the injected failure first")
				}
				renewed = true
			}
		}
		if failed.Load() != 1 {
			t.Fatalf("injected failures: %d", failed.Load())
		}
		second := serialOnDisk(t, stateDir)
		if second == first {
			t.Fatal("the certificate on disk did not change")
		}
		waitHeartbeats(2)
		// Past the first certificate's end: only the renewed one can be working.
		env.Clock.Advance(20 * time.Minute)
		waitHeartbeats(2)

		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("agent: %v", err)
		}
	})
}

func serialOnDisk(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, agent.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(data, mustRead(t, filepath.Join(dir, agent.KeyFile))); err != nil {
		t.Fatalf("agent.crt and agent.key do not match: %v", err)
	}
	return leaf.SerialNumber.String()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
