package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/oneprotect/telemetry/internal/credentials"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/enrollment"
	"github.com/oneprotect/telemetry/internal/observe"
	"github.com/oneprotect/telemetry/internal/strictjson"
	"github.com/oneprotect/telemetry/internal/telemetry"
)

// Handler serves the agent endpoints.
type Handler struct {
	Enrollment *enrollment.Service
	Telemetry  *telemetry.Service
	// Credentials serves the agents' credential rotation.
	Credentials *credentials.Service
	MaxBody     int64
	Log         *slog.Logger
	Metrics     *observe.Metrics
}

// Register mounts the endpoints on mux.
func (h *Handler) Register(mux *http.ServeMux, wrap func(route string, next http.Handler) http.Handler) {
	mux.Handle("POST /api/v1/agents/enroll", wrap("enroll", http.HandlerFunc(h.enroll)))
	mux.Handle("POST /api/v1/agents/{agent_id}/telemetry/heartbeat", wrap("heartbeat", http.HandlerFunc(h.heartbeat)))
	h.registerCertificates(mux, wrap)
	mux.Handle("POST /api/v1/agents/{agent_id}/credentials/rotate", wrap("rotate", http.HandlerFunc(h.rotate)))
}

type enrollResponse struct {
	AgentID                  string  `json:"agent_id"`
	AssetID                  string  `json:"asset_id"`
	TenantID                 string  `json:"tenant_id"`
	SiteID                   string  `json:"site_id"`
	CollectorID              *string `json:"collector_id"`
	Status                   string  `json:"status"`
	Token                    string  `json:"token"`
	HeartbeatIntervalSeconds int     `json:"heartbeat_interval_seconds"`
	certificateFields
}

func (h *Handler) enroll(w http.ResponseWriter, r *http.Request) {
	// The source address is rate-limited before anything else is looked at.
	if err := h.Enrollment.Admit(r.RemoteAddr); err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	data, err := h.readBody(w, r)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	req, err := decodeEnroll(data)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	out, err := h.Enrollment.Enroll(r.Context(), req)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	id := out.Identity
	writeJSON(w, http.StatusCreated, &enrollResponse{AgentID: id.AgentID, AssetID: id.AssetID, TenantID: id.TenantID,
		SiteID: id.SiteID, CollectorID: id.CollectorID, Status: "enrolled", Token: out.Token,
		HeartbeatIntervalSeconds: out.HeartbeatIntervalSeconds, certificateFields: certificateAnswer(out.Certificate)})
}

// heartbeatBody is the REST form of a heartbeat: the content plus the identity fields a body
// may name (and must then match).
type heartbeatBody struct {
	HeartbeatID  *string              `json:"heartbeat_id"`
	SentAt       *string              `json:"sent_at"` // parsed here, to name the field of any error
	Hostname     *string              `json:"hostname"`
	AgentVersion *string              `json:"agent_version"`
	Inventory    *telemetry.Inventory `json:"inventory"`
	TenantID     *string              `json:"tenant_id"`
	SiteID       *string              `json:"site_id"`
	CollectorID  *string              `json:"collector_id"`
	AssetID      *string              `json:"asset_id"`
	AgentID      *string              `json:"agent_id"`
}

type heartbeatResponse struct {
	AgentID              string    `json:"agent_id"`
	AssetID              string    `json:"asset_id"`
	Status               string    `json:"status"`
	Accepted             bool      `json:"accepted"`
	Duplicate            bool      `json:"duplicate"`
	ReceivedAt           time.Time `json:"received_at"`
	NextHeartbeatSeconds int       `json:"next_heartbeat_seconds"`
	// CredentialExpiresAt (extension) is when the agent's token stops working, if it will.
	CredentialExpiresAt *time.Time `json:"credential_expires_at,omitempty"`
}

func (h *Handler) heartbeat(w http.ResponseWriter, r *http.Request) {
	res, err := h.submit(r)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, &heartbeatResponse{AgentID: res.AgentID, AssetID: res.AssetID, Status: "active",
		Accepted: res.Accepted, Duplicate: res.Duplicate, ReceivedAt: res.ReceivedAt, NextHeartbeatSeconds: res.NextHeartbeatSeconds,
		CredentialExpiresAt: res.CredentialExpiresAt})
}

func (h *Handler) submit(r *http.Request) (*telemetry.Result, error) {
	ctx := telemetry.WithTransport(r.Context(), telemetry.TransportREST)
	refused := func(err error) (*telemetry.Result, error) {
		h.Telemetry.Count(ctx, nil, err) // Submit counts the rest
		return nil, err
	}
	// The caller is checked before the body is read (CONTRACT §4's order), and so is the
	// bound on heartbeats in flight: over it, the answer is 503 before the body costs
	// anything (telemetry.Service.Admit says why the order allows it).
	done, err := h.Telemetry.Admit(ctx, r.PathValue("agent_id"))
	if err != nil {
		return nil, err // counted by Admit
	}
	defer done()
	data, err := h.readBody(nil, r)
	if err != nil {
		return refused(err)
	}
	hb, claims, err := decodeHeartbeat(data)
	if err != nil {
		return refused(err)
	}
	return h.Telemetry.Submit(ctx, r.PathValue("agent_id"), hb, claims)
}

// decodeHeartbeat turns a heartbeat body into the service's heartbeat and the identity
// fields it named.
func decodeHeartbeat(data []byte) (*telemetry.Heartbeat, *telemetry.IdentityClaims, error) {
	var body heartbeatBody
	if err := decodeJSON(data, &body); err != nil {
		return nil, nil, err
	}
	hb := &telemetry.Heartbeat{HeartbeatID: body.HeartbeatID, Hostname: body.Hostname,
		AgentVersion: body.AgentVersion, Inventory: body.Inventory}
	if body.SentAt != nil {
		sent, err := time.Parse(time.RFC3339Nano, *body.SentAt)
		if err != nil {
			return nil, nil, domain.Invalid("sent_at", "sent_at must be an RFC 3339 timestamp")
		}
		hb.SentAt = &sent
	}
	claims := &telemetry.IdentityClaims{TenantID: body.TenantID, SiteID: body.SiteID, CollectorID: body.CollectorID,
		AssetID: body.AssetID, AgentID: body.AgentID}
	return hb, claims, nil
}

// decodeEnroll decodes an enrollment body.
func decodeEnroll(data []byte) (*enrollment.EnrollRequest, error) {
	var req enrollment.EnrollRequest
	if err := decodeJSON(data, &req); err != nil {
		return nil, err
	}
	return &req, nil
}

// readBody checks the media type and reads at most MaxBody bytes.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, &domain.Error{Code: domain.CodeUnsupportedMediaType, Message: "Content-Type must be application/json"}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &domain.Error{Code: domain.CodePayloadTooLarge, Message: fmt.Sprintf("the body exceeds %d bytes", h.MaxBody)}
		}
		return nil, domain.Invalid("body", "the body could not be read")
	}
	return data, nil
}

// readJSON is readBody then decodeJSON: the media type, the size, then one strict JSON object.
func (h *Handler) readJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	data, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeJSON(data, dst)
}

// decodeJSON decodes one JSON object into dst, naming the field of any error. The document
// is first checked strictly (duplicate keys, invalid UTF-8, NUL characters), because
// encoding/json lets all three through. Unknown fields are ignored (newer agents keep
// working).
func decodeJSON(data []byte, dst any) error {
	if trimmed := bytes.TrimSpace(data); len(trimmed) == 0 {
		return domain.Invalid("body", "the body is empty")
	} else if trimmed[0] != '{' {
		return domain.Invalid("body", "the body must be a JSON object")
	}
	if err := strictjson.Check(data); err != nil {
		var syn *strictjson.SyntaxError
		if errors.As(err, &syn) {
			if syn.Msg == "more than one JSON value" {
				return domain.Invalid("body", "the body must hold exactly one JSON object")
			}
			return domain.Invalid("body", "malformed JSON at byte %d", syn.Offset)
		}
		return err
	}
	if err := json.Unmarshal(data, dst); err != nil {
		return jsonError(err)
	}
	return nil
}

func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return domain.Invalid(field, "%s must be of type %s", field, jsonType(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr):
		return domain.Invalid("body", "malformed JSON at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Invalid("body", "the body is empty or truncated JSON")
	}
	return domain.Invalid("body", "malformed JSON")
}

func jsonType(kind string) string {
	switch kind {
	case "ptr", "struct", "map":
		return "object"
	case "slice":
		return "array"
	case "int", "int64", "float64":
		return "number"
	}
	return kind
}

type rotateResponse struct {
	AgentID                string     `json:"agent_id"`
	Token                  string     `json:"token"`
	ExpiresAt              *time.Time `json:"expires_at"`
	PreviousTokenExpiresAt time.Time  `json:"previous_token_expires_at"`
}

// rotate answers POST /api/v1/agents/{agent_id}/credentials/rotate. It takes no body: the
// bearer token is the whole request, so a body (if any) is not read.
func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) {
	out, err := h.Credentials.Rotate(r.Context(), r.PathValue("agent_id"))
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, &rotateResponse{AgentID: out.AgentID, Token: out.Token, ExpiresAt: out.ExpiresAt,
		PreviousTokenExpiresAt: out.PreviousTokenExpiresAt})
}
