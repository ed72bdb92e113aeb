package enrollment

import (
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/pacing"
)

// Admit takes one enrollment attempt from the bucket of the caller's source address
// (remoteAddr as the transport saw it: host:port). Every attempt counts, good or bad, so
// the limit also slows the guessing of enrollment tokens. 429 rate_limited with a
// Retry-After when the address is over the limit.
func (s *Service) Admit(remoteAddr string) error {
	if ok, wait := s.RateLimit.Allow(pacing.SourceKey(remoteAddr)); !ok {
		return &domain.Error{Code: domain.CodeRateLimited, RetryAfter: wait,
			Message: "too many enrollments from this address; retry after the Retry-After delay"}
	}
	return nil
}
