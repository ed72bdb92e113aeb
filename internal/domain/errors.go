// Package domain holds the nouns of OneProtect Telemetry and its one error type.
package domain

import (
	"errors"
	"fmt"
	"time"
)

// Code is a machine-readable error code. Transports map it in exactly one place each:
// internal/rest (HTTP status, lower-case code) and graph (extensions.code, upper case).
type Code string

const (
	CodeInvalidRequest         Code = "invalid_request"
	CodeUnauthenticated        Code = "unauthenticated"
	CodeForbidden              Code = "forbidden"
	CodeServiceAccountRequired Code = "service_account_required"
	CodeNotFound               Code = "not_found"
	CodeConflict               Code = "conflict"
	CodeUnsupportedMediaType   Code = "unsupported_media_type"
	CodePayloadTooLarge        Code = "payload_too_large"
	CodeInvalidEnrollmentToken Code = "invalid_enrollment_token"
	CodeUnknownAgent           Code = "unknown_agent"
	CodeActorMismatch          Code = "actor_mismatch"
	CodeCollectorMismatch      Code = "collector_mismatch"
	CodeAgentRevoked           Code = "agent_revoked"
	CodeAgentStale             Code = "agent_stale"
	CodeIdentityOverride       Code = "identity_override"
	CodeIdempotencyConflict    Code = "idempotency_conflict"
	CodeIdentityConflict       Code = "identity_conflict"
	CodeComplexityLimit        Code = "complexity_limit_exceeded"
	CodeUnavailable            Code = "unavailable"
	CodeRateLimited            Code = "rate_limited"
	CodeCredentialExpired      Code = "credential_expired"
	CodeInternal               Code = "internal"
)

// Agent certificates (mTLS): no valid client certificate of the agent CA (401), or one
// naming another agent, collector or tenant than the request's (403).
const (
	CodeClientCertificateRequired Code = "client_certificate_required"
	CodeCertificateMismatch       Code = "certificate_mismatch"
)

// Error is the application error. Message is safe to show to the caller; Field names the
// offending input field where there is one. Anything that is not an *Error is internal.
type Error struct {
	Code    Code
	Message string
	Field   string
	// RetryAfter, when set, tells the caller how long to wait (REST: the Retry-After header).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Invalid reports bad input in the named field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, CodeInternal when err is not an *Error.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Common errors.
var (
	ErrUnauthenticated = &Error{Code: CodeUnauthenticated, Message: "a valid bearer token is required"}
	ErrForbidden       = &Error{Code: CodeForbidden, Message: "this principal may not use this operation"}
	ErrUnavailable     = &Error{Code: CodeUnavailable, Message: "the database cannot be reached, try again later"}
)

// NotFound reports that an object does not exist in the caller's tenant.
func NotFound(what string) *Error {
	return &Error{Code: CodeNotFound, Message: what + " not found"}
}
