package telemetry

import (
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/pacing"
)

// The agent-facing rules around a heartbeat that are not about its content: the credential's
// maximum age (checked with the caller), the agent's rate limit (checked last, before the
// write, so a refused heartbeat writes nothing) and the paced next interval.

func (s *Service) checkCredential(caller *domain.Principal) error {
	return s.Credentials.Check(caller)
}

func errRateLimited(wait time.Duration) error {
	return &domain.Error{Code: domain.CodeRateLimited, RetryAfter: wait,
		Message: "this agent sends heartbeats faster than the server allows; wait for the Retry-After delay and keep to next_heartbeat_seconds"}
}

// rateLimit takes one request from the agent's bucket (the key carries the tenant, like
// every per-agent key).
func (s *Service) rateLimit(id *domain.AgentIdentity) error {
	if ok, wait := s.RateLimit.Allow(id.TenantID + "/" + id.AgentID); !ok {
		return errRateLimited(wait)
	}
	return nil
}

// pace fills in the answer's pacing: the jittered, slotted next interval and, for an agent
// token that will expire, when, so that the agent rotates in time.
func (s *Service) pace(res *Result, caller *domain.Principal, received time.Time) {
	res.NextHeartbeatSeconds = pacing.NextHeartbeat(res.AgentID, received, s.HeartbeatInterval)
	res.CredentialExpiresAt = s.Credentials.ExpiresAt(caller)
}
