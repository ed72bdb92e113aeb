// Package rest is the REST shim for agents (CONTRACT §4): decode, call the service, encode.
// It holds no business rules; the order of checks it owns is only the transport's part
// (media type, body size, JSON syntax), placed where the contract's table puts it.
package rest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/observe"
	"github.com/oneprotect/telemetry/internal/pacing"
)

// statusOf is the one mapping from error codes to HTTP statuses.
func statusOf(code domain.Code) int {
	switch code {
	case domain.CodeInvalidRequest, domain.CodeComplexityLimit:
		return http.StatusBadRequest
	case domain.CodeUnauthenticated, domain.CodeInvalidEnrollmentToken, domain.CodeUnknownAgent,
		domain.CodeClientCertificateRequired, domain.CodeCredentialExpired:
		return http.StatusUnauthorized
	case domain.CodeForbidden, domain.CodeServiceAccountRequired, domain.CodeActorMismatch,
		domain.CodeCollectorMismatch, domain.CodeAgentRevoked, domain.CodeAgentStale, domain.CodeIdentityOverride,
		domain.CodeCertificateMismatch:
		return http.StatusForbidden
	case domain.CodeNotFound:
		return http.StatusNotFound
	case domain.CodeConflict, domain.CodeIdempotencyConflict, domain.CodeIdentityConflict:
		return http.StatusConflict
	case domain.CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case domain.CodeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case domain.CodeUnavailable:
		return http.StatusServiceUnavailable
	case domain.CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Field     string `json:"field,omitempty"`
		RequestID string `json:"request_id,omitempty"`
	} `json:"error"`
}

// writeError answers err. Only domain errors reach the client with their message; anything
// else is logged with the request id and answered as "internal error".
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var body errorBody
	body.Error.RequestID = observe.RequestID(r.Context())
	var de *domain.Error
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody is left to answer
	}
	if errors.As(err, &de) {
		body.Error.Code, body.Error.Message, body.Error.Field = string(de.Code), de.Message, de.Field
	} else {
		log.Error("internal error", "request_id", body.Error.RequestID, "path", r.URL.Path, "err", err)
		body.Error.Code, body.Error.Message = string(domain.CodeInternal), "internal error"
	}
	if de != nil && de.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(pacing.RetryAfterSeconds(de.RetryAfter)))
	} else if body.Error.Code == string(domain.CodeUnavailable) {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, statusOf(domain.Code(body.Error.Code)), &body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
