package agent

import (
	"context"
	"fmt"
	"time"
)

// Credential rotation. The agent rotates its token once two thirds of its lifetime (from
// when it got it to the credential_expires_at the server reports) have passed, or at once
// when the server answers credential_expired. The state file changes in two atomic steps:
//
//  1. after the server answered the rotation: token = new, previous_token = old;
//  2. after a heartbeat with the new token was accepted: previous_token is dropped.
//
// A crash before step 1 leaves the old token, which works for the server's grace period (the
// next answer reports that it expires soon, so the agent rotates again at once); a crash
// between the steps leaves both, and a new token the server does not take (401) sends the
// agent back to the old one.

// rotateDue reports whether the token that sent res should be rotated now.
func (r *runner) rotateDue(st *State, res *HeartbeatResult, now time.Time) bool {
	if r.cfg.CollectorToken != "" {
		return false // a collector's token is not the agent's to rotate
	}
	exp := res.CredentialExpiresAt
	if !st.TokenExpirySeen {
		st.TokenExpiresAt, st.TokenExpirySeen = exp, true
		if err := SaveState(r.cfg.StateDir, st); err != nil {
			r.log.Warn("could not save state", "err", err)
		}
	}
	if exp == nil {
		return false // no expiry, no hurry
	}
	if known := st.TokenExpiresAt; known == nil || exp.Before(known.Add(-time.Second)) {
		return true // superseded by a rotation this agent did not see through, or a lower maximum age
	}
	issued := st.TokenIssuedAt
	if issued.IsZero() {
		issued = st.EnrolledAt
	}
	due := issued.Add(exp.Sub(issued) * 2 / 3)
	// A short lifetime still leaves a few intervals to get the rotation through.
	if soon := exp.Add(-3 * r.interval(st)); soon.Before(due) {
		due = soon
	}
	return !now.Before(due)
}

// rotate exchanges the token and saves the new one beside the old (step 1).
func (r *runner) rotate(ctx context.Context, st *State) error {
	rot, err := r.client.Rotate(ctx, st.AgentID, st.Token)
	if err != nil {
		return err
	}
	next := *st
	next.Token, next.PreviousToken, next.TokenIssuedAt = rot.Token, st.Token, r.cfg.Now().UTC()
	next.TokenExpiresAt, next.TokenExpirySeen = rot.ExpiresAt, true
	if err := SaveState(r.cfg.StateDir, &next); err != nil {
		// The new token is lost with this process; the old one keeps working for the grace
		// period and the next rotation replaces it.
		return fmt.Errorf("rotated, but could not save the new token: %w", err)
	}
	*st = next
	r.log.Info("credential rotated", "agent_id", st.AgentID, "expires_at", rot.ExpiresAt,
		"previous_token_expires_at", rot.PreviousTokenExpiresAt)
	if r.cfg.OnRotate != nil {
		r.cfg.OnRotate(st.AgentID)
	}
	return nil
}

// confirm drops the previous token once the current one has been accepted (step 2).
func (r *runner) confirm(st *State, token string) {
	if st.PreviousToken == "" || token != st.Token {
		return
	}
	st.PreviousToken = ""
	if err := SaveState(r.cfg.StateDir, st); err != nil {
		r.log.Warn("could not save state", "err", err)
	}
}

// fallBack returns to the previous token when the new one is refused as unknown.
func (r *runner) fallBack(st *State) bool {
	if st.PreviousToken == "" {
		return false
	}
	r.log.Warn("the server does not take the rotated token; going back to the previous one", "agent_id", st.AgentID)
	st.Token, st.PreviousToken = st.PreviousToken, ""
	st.TokenExpiresAt, st.TokenExpirySeen = nil, false
	if err := SaveState(r.cfg.StateDir, st); err != nil {
		r.log.Warn("could not save state", "err", err)
	}
	return true
}
