package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/oneprotect/telemetry/internal/agent"
)

// agentCommand runs `oneprotect agent`: a real agent for this machine.
func agentCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent")
	server := fs.String("server", "", "the service's base URL, e.g. http://127.0.0.1:8080 (needed to enroll; later: the stored one)")
	enrollToken := fs.String("enrollment-token", "", "enrollment token: needed to enroll; a new one re-enrolls a revoked agent or enrolls with another --server")
	collectorToken := fs.String("collector-token", "", "send heartbeats as this collector instead of as the agent")
	stateDir := fs.String("state-dir", agent.DefaultStateDir(), "directory that keeps the agent's identity and token (created 0700)")
	once := fs.Bool("once", false, "send one heartbeat, then exit")
	interval := fs.Duration("interval", 0, "heartbeat interval (default: the interval the server advertises)")
	asJSON := fs.Bool("json", false, "with --once: print the heartbeat result as JSON; otherwise log JSON to stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *stateDir == "" {
		return errors.New("--state-dir is required")
	}
	if *interval < 0 {
		return errors.New("--interval must not be negative")
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, nil)
	if *asJSON && !*once {
		handler = slog.NewJSONHandler(stderr, nil)
	}
	var last struct {
		id  string
		res *agent.HeartbeatResult
	}
	err := agent.Run(ctx, agent.Config{
		Server: *server, EnrollmentToken: *enrollToken, CollectorToken: *collectorToken, StateDir: *stateDir,
		Once: *once, Interval: *interval, Log: slog.New(handler),
		HTTP: agentHTTPClient(),
		OnHeartbeat: func(id string, res *agent.HeartbeatResult) {
			last.id, last.res = id, res
		},
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if *once && *asJSON && last.res != nil {
		return printJSON(stdout, map[string]any{"agent_id": last.res.AgentID, "asset_id": last.res.AssetID,
			"heartbeat_id": last.id, "accepted": last.res.Accepted, "duplicate": last.res.Duplicate,
			"received_at": last.res.ReceivedAt, "next_heartbeat_seconds": last.res.NextHeartbeatSeconds})
	}
	return nil
}

func agentHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second}
}
