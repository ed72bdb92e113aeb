// Package agent is the OneProtect agent: it enrolls once, keeps its identity in a state
// directory and sends heartbeats carrying the host's inventory at the interval the server
// advertises, retrying with backoff.
package agent

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
	"time"
)

// Version is the agent version reported at enrollment and in every heartbeat.
const Version = "0.6.0"

// Config configures Run. StateDir is required. Server is required until the agent has
// enrolled (later it defaults to the server stored with the identity); EnrollmentToken is
// required until the agent has enrolled, and re-enrolls it when it is not the token the
// identity came from.
type Config struct {
	Server          string
	EnrollmentToken string
	// CollectorToken, when set, authenticates heartbeats as the identity's collector.
	CollectorToken string
	StateDir       string
	// Once sends one heartbeat (with its retries) and returns.
	Once bool
	HTTP *http.Client
	Log  *slog.Logger
	// Interval overrides the interval the server advertises (tests, demos); 0 follows it.
	Interval time.Duration
	// Jitter is the fraction by which each wait varies either way (default 0.1).
	Jitter float64
	// MinBackoff and MaxBackoff bound the retry backoff (defaults 1s and 60s).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the tries of one heartbeat in Once mode (default 5); without Once
	// a heartbeat is retried until it is delivered or refused.
	MaxAttempts int
	// Inventory collects the inventory (default Collect); Hostname overrides Hostname().
	Inventory func() Inventory
	Hostname  string
	// MachineID overrides /etc/machine-id (default MachineID(StateDir)).
	MachineID string
	// OnHeartbeat is called after each accepted heartbeat; OnRetry before each retry wait.
	OnHeartbeat func(heartbeatID string, res *HeartbeatResult)
	OnRetry     func(heartbeatID string, wait time.Duration, err error)
	// OnRotate is called after the agent rotated its credential and saved the new token.
	OnRotate func(agentID string)
	// Now is the clock that times credential rotation (default time.Now; tests share the
	// server's clock).
	Now func() time.Time

	// MTLS makes a key (StateDir/agent.key, 0600) and sends a CSR at enrollment, presents the
	// certificate on every request and renews it at two thirds of its lifetime (timed by Now).
	MTLS bool
	// OnRenewal learns of each certificate renewal attempt (nil error: renewed).
	OnRenewal func(err error)
}

// StopError means the server refused this agent for good (revoked, stale, or unknown with
// no enrollment token left): running on would be pointless.
type StopError struct {
	Code    string
	Message string
}

func (e *StopError) Error() string {
	switch e.Code {
	case "agent_revoked":
		return "agent_revoked: the server has revoked this agent's identity; enroll again with a new enrollment token (delete state.json)"
	case "agent_stale":
		return "agent_stale: the server marked this agent STALE after a long silence; an admin must reactivate it (reactivateAgentIdentity)"
	case "unknown_agent":
		return "unknown_agent: the server does not know this agent and no --enrollment-token was given to enroll again"
	case "unauthenticated":
		return "unauthenticated: the server refuses this agent's token (was the state directory made for another server?); enroll again with --enrollment-token"
	case "identity_conflict":
		return "identity_conflict: another machine uses this agent's credential (a copied disk or VM image) and the server keeps that one; give --enrollment-token to enroll this machine as a new agent"
	}
	return e.Code + ": " + e.Message
}

type runner struct {
	cfg    Config
	client *Client
	log    *slog.Logger
	// enrolledWith is the stored server when --server names another one.
	enrolledWith string
	// next is the wait the server asked for in its last answer (paced and jittered there).
	next  time.Duration
	certs *certs // with MTLS
}

// Run enrolls if needed, then sends heartbeats until ctx ends (nil), the server refuses
// the agent for good (*StopError) or, with Once, after one heartbeat.
func Run(ctx context.Context, cfg Config) error {
	if cfg.StateDir == "" {
		return errors.New("--state-dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Jitter <= 0 {
		cfg.Jitter = 0.1
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(60*time.Second, cfg.MinBackoff)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Inventory == nil {
		cfg.Inventory = Collect
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &runner{cfg: cfg, log: cfg.Log}
	if cfg.MTLS {
		r.certs = &certs{dir: cfg.StateDir}
		if err := r.certs.load(); err != nil {
			return err
		}
		hc, err := withClientCertificates(cfg.HTTP, r.certs)
		if err != nil {
			return err
		}
		r.cfg.HTTP = hc
	}
	err := r.run(ctx)
	if ctx.Err() != nil && !isStop(err) {
		r.log.Info("agent stopped")
		return nil
	}
	return err
}

func isStop(err error) bool {
	var s *StopError
	return errors.As(err, &s)
}

// start loads the identity, picks the server (the stored one unless --server names another)
// and enrolls when there is no identity for that server yet.
func (r *runner) start(ctx context.Context) (*State, error) {
	st, err := LoadState(r.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	server := r.cfg.Server
	if server == "" && st != nil {
		server = st.Server
	}
	if server == "" {
		return nil, errors.New("--server is required until the agent has enrolled")
	}
	if r.client, err = NewClient(server, r.cfg.HTTP); err != nil {
		return nil, err
	}
	switch {
	case st == nil:
		if r.cfg.EnrollmentToken == "" {
			return nil, fmt.Errorf("no identity in %s yet: --enrollment-token is required to enroll", r.cfg.StateDir)
		}
		return r.enroll(ctx)
	case st.Server != "" && !sameServer(st.Server, r.client.Server):
		// Maybe the same service under another address (a proxy, a new name): the identity is
		// tried there, and a 401 then says it is another service (see run).
		r.enrolledWith = st.Server
		r.log.Info("--server differs from the server this identity was enrolled with", "server", r.client.Server,
			"enrolled_with", st.Server)
	}
	r.log.Info("reusing identity", "agent_id", st.AgentID, "asset_id", st.AssetID, "server", r.client.Server, "state_dir", r.cfg.StateDir)
	return st, nil
}

// sameServer compares base URLs, ignoring a trailing slash and the case of scheme and host.
func sameServer(a, b string) bool {
	return strings.EqualFold(strings.TrimRight(a, "/"), strings.TrimRight(b, "/"))
}

// newEnrollmentToken reports whether the configured enrollment token is not the one st came
// from (a state from an agent that did not record it counts as new).
func (r *runner) newEnrollmentToken(st *State) bool {
	return r.cfg.EnrollmentToken != "" && st.EnrollmentTokenSHA256 != tokenDigest(r.cfg.EnrollmentToken)
}

func (r *runner) run(ctx context.Context) error {
	st, err := r.start(ctx)
	if err != nil {
		return err
	}
	// retried allows one immediate retry of a refused heartbeat after rotating or falling
	// back to the previous token, never a loop of them.
	retried := false
	for {
		r.renewIfDue(ctx, st)
		hbID, res, used, err := r.deliver(ctx, st)
		var apiErr *APIError
		r.next = 0
		switch {
		case err == nil:
			r.confirm(st, used)
			if res.NextHeartbeatSeconds > 0 {
				r.next = time.Duration(res.NextHeartbeatSeconds) * time.Second
			}
			if r.enrolledWith != "" {
				// The server that accepts the identity becomes the default for the next runs.
				st.Server, r.enrolledWith = r.client.Server, ""
				if err := SaveState(r.cfg.StateDir, st); err != nil {
					r.log.Warn("could not save state", "err", err)
				}
			}
			r.log.Info("heartbeat accepted", "agent_id", st.AgentID, "heartbeat_id", hbID, "duplicate", res.Duplicate,
				"next_in", r.wait(st).String())
			if r.cfg.OnHeartbeat != nil {
				r.cfg.OnHeartbeat(hbID, res)
			}
			if r.rotateDue(st, res, r.cfg.Now()) {
				if err := r.rotate(ctx, st); err != nil && ctx.Err() == nil {
					r.log.Warn("credential rotation failed; the current token is kept and the rotation retried later", "agent_id", st.AgentID, "err", err)
				}
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case !retried && errors.As(err, &apiErr) && apiErr.Code == "credential_expired" && r.cfg.CollectorToken == "":
			r.log.Warn("the server says this agent's credential is too old: rotating", "agent_id", st.AgentID)
			rerr := r.rotate(ctx, st)
			if rerr == nil {
				retried = true
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Error("credential rotation failed", "agent_id", st.AgentID, "err", rerr)
			if r.cfg.Once {
				return err
			}
		case !retried && errors.As(err, &apiErr) && apiErr.Code == "unauthenticated" && used == st.Token && r.fallBack(st):
			retried = true
			continue
		case errors.As(err, &apiErr) && r.enrolledWith != "" && r.cfg.EnrollmentToken == "" &&
			(apiErr.Code == "unauthenticated" || apiErr.Code == "unknown_agent"):
			return fmt.Errorf("%s does not know the identity in %s, which was enrolled with %s (%s): give --enrollment-token to enroll with %s, or leave out --server to use %s",
				r.client.Server, r.cfg.StateDir, r.enrolledWith, apiErr.Code, r.client.Server, r.enrolledWith)
		case errors.As(err, &apiErr) && (apiErr.Code == "agent_revoked" || apiErr.Code == "agent_stale" || apiErr.Code == "unauthenticated"):
			if r.newEnrollmentToken(st) {
				// An admin handed out a new token: that is the way back after a revoke. The token
				// the identity came from is not: giving it again must not undo the revoke.
				r.log.Warn("the server refuses this identity: enrolling again with the new enrollment token",
					"agent_id", st.AgentID, "code", apiErr.Code)
				if st, err = r.enroll(ctx); err != nil {
					return err
				}
				continue
			}
			r.log.Error("the server refuses this agent", "agent_id", st.AgentID, "code", apiErr.Code, "message", apiErr.Message)
			return &StopError{Code: apiErr.Code, Message: apiErr.Message}
		case errors.As(err, &apiErr) && apiErr.Code == "identity_conflict":
			// This machine is a copy of another that keeps the credential: it becomes an agent
			// of its own, under a machine id of its own (its copied one would supersede the
			// other's identity).
			if r.cfg.EnrollmentToken == "" {
				r.log.Error("another machine uses this agent's credential", "agent_id", st.AgentID, "message", apiErr.Message)
				return &StopError{Code: apiErr.Code, Message: apiErr.Message}
			}
			r.log.Warn("another machine uses this agent's credential: enrolling this machine as a new agent", "agent_id", st.AgentID)
			if err := newCloneMachineID(r.cfg.StateDir); err != nil {
				return fmt.Errorf("machine id: %w", err)
			}
			if st, err = r.enroll(ctx); err != nil {
				return err
			}
			continue
		case errors.As(err, &apiErr) && apiErr.Code == "unknown_agent":
			if r.cfg.EnrollmentToken == "" {
				return &StopError{Code: apiErr.Code, Message: apiErr.Message}
			}
			r.log.Warn("the server does not know this agent: enrolling again", "agent_id", st.AgentID)
			if st, err = r.enroll(ctx); err != nil {
				return err
			}
			continue
		default:
			// A refusal that will not change by retrying (400, 409...), or, with --once, a server
			// still unreachable after the last attempt: logged, and the next heartbeat comes at
			// the next interval.
			if errors.As(err, &apiErr) && apiErr.Status == 0 {
				r.log.Error("heartbeat not delivered: the server cannot be reached", "server", r.client.Server, "agent_id", st.AgentID,
					"heartbeat_id", hbID, "err", apiErr.Err)
			} else {
				r.log.Error("heartbeat refused", "agent_id", st.AgentID, "heartbeat_id", hbID, "err", err)
			}
			if r.cfg.Once {
				return err
			}
		}
		retried = false
		if r.cfg.Once {
			return nil
		}
		if err := Sleep(ctx, r.wait(st)); err != nil {
			return err
		}
	}
}

// wait is how long to sleep before the next heartbeat: what the server asked for (it paces
// and jitters its answers, so no jitter is added), else the interval with local jitter.
func (r *runner) wait(st *State) time.Duration {
	if r.next > 0 && r.cfg.Interval == 0 {
		return r.next
	}
	return r.jittered(r.interval(st))
}

// enroll enrolls this machine, retrying while the server is unreachable or busy, and
// saves the identity.
func (r *runner) enroll(ctx context.Context) (*State, error) {
	machineID := cloneMachineID(r.cfg.StateDir)
	if machineID == "" {
		machineID = r.cfg.MachineID
	}
	if machineID == "" {
		var err error
		if machineID, err = MachineID(r.cfg.StateDir); err != nil {
			return nil, fmt.Errorf("machine id: %w", err)
		}
	}
	req := EnrollRequest{EnrollmentToken: r.cfg.EnrollmentToken, Hostname: r.hostname(), AgentVersion: Version, MachineID: machineID}
	if r.certs != nil {
		var err error
		if req.CSR, err = r.certs.newCSR(r.hostname()); err != nil {
			return nil, fmt.Errorf("make the agent key: %w", err)
		}
	}
	for attempt := 1; ; attempt++ {
		en, err := r.client.Enroll(ctx, req)
		if err == nil && r.certs != nil {
			if err := r.certs.install(en.Certificate, en.CACertificate); err != nil {
				return nil, fmt.Errorf("enrolled as %s but the certificate cannot be kept: %w", en.AgentID, err)
			}
		}
		if err == nil {
			st := &State{Server: r.client.Server, MachineID: machineID, AgentID: en.AgentID, AssetID: en.AssetID,
				TenantID: en.TenantID, SiteID: en.SiteID, CollectorID: en.CollectorID, Token: en.Token,
				EnrolledAt: r.cfg.Now().UTC(), HeartbeatIntervalSeconds: en.HeartbeatIntervalSeconds,
				EnrollmentTokenSHA256: tokenDigest(r.cfg.EnrollmentToken)}
			st.TokenIssuedAt = st.EnrolledAt
			if err := SaveState(r.cfg.StateDir, st); err != nil {
				return nil, fmt.Errorf("enrolled as %s but could not save the state: %w", en.AgentID, err)
			}
			r.enrolledWith = ""
			r.log.Info("enrolled", "agent_id", en.AgentID, "asset_id", en.AssetID, "site_id", en.SiteID,
				"heartbeat_interval_seconds", en.HeartbeatIntervalSeconds, "state", r.cfg.StateDir)
			return st, nil
		}
		var apiErr *APIError
		if ctx.Err() != nil || !errors.As(err, &apiErr) || !apiErr.Retryable() || (r.cfg.Once && attempt >= r.cfg.MaxAttempts) {
			return nil, fmt.Errorf("enroll: %w", err)
		}
		wait := r.backoff(attempt, apiErr)
		r.log.Warn("enrollment failed, retrying", "err", err, "in", wait.String())
		if err := Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// deliver sends one new heartbeat, retrying transport failures, 429 and 5xx with the same
// body (so the same heartbeat_id: the server counts it once however often it arrives). It
// also returns the token it used.
func (r *runner) deliver(ctx context.Context, st *State) (string, *HeartbeatResult, string, error) {
	inv := r.cfg.Inventory()
	hb := HeartbeatBody{HeartbeatID: randomHex(16), SentAt: time.Now().UTC().Truncate(time.Millisecond),
		Hostname: r.hostname(), AgentVersion: Version, Inventory: &inv}
	body, err := json.Marshal(&hb)
	if err != nil {
		return hb.HeartbeatID, nil, "", err
	}
	token := st.Token
	if r.cfg.CollectorToken != "" {
		token = r.cfg.CollectorToken
	}
	for attempt := 1; ; attempt++ {
		res, err := r.client.Heartbeat(ctx, st.AgentID, token, body)
		if err == nil {
			return hb.HeartbeatID, res, token, nil
		}
		var apiErr *APIError
		if ctx.Err() != nil || !errors.As(err, &apiErr) || !apiErr.Retryable() || (r.cfg.Once && attempt >= r.cfg.MaxAttempts) {
			return hb.HeartbeatID, nil, token, err
		}
		wait := r.backoff(attempt, apiErr)
		r.log.Warn("heartbeat failed, retrying", "heartbeat_id", hb.HeartbeatID, "err", err, "in", wait.String())
		if r.cfg.OnRetry != nil {
			r.cfg.OnRetry(hb.HeartbeatID, wait, err)
		}
		if err := Sleep(ctx, wait); err != nil {
			return hb.HeartbeatID, nil, token, err
		}
	}
}

// backoff is exponential with jitter (half fixed, half random, so retries of many agents
// spread out), and never shorter than the server's Retry-After.
func (r *runner) backoff(attempt int, apiErr *APIError) time.Duration {
	d := r.cfg.MinBackoff << min(attempt-1, 20)
	if d > r.cfg.MaxBackoff || d <= 0 {
		d = r.cfg.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	if apiErr != nil && apiErr.RetryAfter > d {
		d = apiErr.RetryAfter
	}
	return d
}

func (r *runner) interval(st *State) time.Duration {
	if r.cfg.Interval > 0 {
		return r.cfg.Interval
	}
	if st.HeartbeatIntervalSeconds > 0 {
		return time.Duration(st.HeartbeatIntervalSeconds) * time.Second
	}
	return 60 * time.Second
}

func (r *runner) jittered(d time.Duration) time.Duration {
	spread := time.Duration(float64(d) * r.cfg.Jitter)
	if spread <= 0 {
		return d
	}
	return d - spread + rand.N(2*spread+1)
}

func (r *runner) hostname() string {
	if r.cfg.Hostname != "" {
		return r.cfg.Hostname
	}
	return Hostname()
}

// Sleep waits for d or until ctx ends, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
