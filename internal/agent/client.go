package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client speaks the agent side of the REST API (CONTRACT §4).
type Client struct {
	// Server is the service's base URL, e.g. http://127.0.0.1:8080.
	Server string
	HTTP   *http.Client
}

// NewClient checks the server URL and returns a client for it.
func NewClient(server string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server must be an http:// or https:// URL, got %q", server)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{Server: strings.TrimRight(server, "/"), HTTP: hc}, nil
}

// EnrollRequest is the body of POST /api/v1/agents/enroll.
type EnrollRequest struct {
	EnrollmentToken string `json:"enrollment_token"`
	Hostname        string `json:"hostname,omitempty"`
	AgentVersion    string `json:"agent_version,omitempty"`
	MachineID       string `json:"machine_id,omitempty"`
	CSR             string `json:"csr,omitempty"`
}

// Enrollment is the server's answer to an enrollment.
type Enrollment struct {
	AgentID                  string  `json:"agent_id"`
	AssetID                  string  `json:"asset_id"`
	TenantID                 string  `json:"tenant_id"`
	SiteID                   string  `json:"site_id"`
	CollectorID              *string `json:"collector_id"`
	Status                   string  `json:"status"`
	Token                    string  `json:"token"`
	HeartbeatIntervalSeconds int     `json:"heartbeat_interval_seconds"`
	// With a CSR: the signed certificate and the agent CA's (PEM).
	Certificate   string `json:"certificate"`
	CACertificate string `json:"ca_certificate"`
}

// HeartbeatBody is a heartbeat as the agent sends it.
type HeartbeatBody struct {
	HeartbeatID  string     `json:"heartbeat_id"`
	SentAt       time.Time  `json:"sent_at"`
	Hostname     string     `json:"hostname,omitempty"`
	AgentVersion string     `json:"agent_version,omitempty"`
	Inventory    *Inventory `json:"inventory,omitempty"`
}

// HeartbeatResult is the server's answer to an accepted heartbeat.
type HeartbeatResult struct {
	AgentID              string    `json:"agent_id"`
	AssetID              string    `json:"asset_id"`
	Status               string    `json:"status"`
	Accepted             bool      `json:"accepted"`
	Duplicate            bool      `json:"duplicate"`
	ReceivedAt           time.Time `json:"received_at"`
	NextHeartbeatSeconds int       `json:"next_heartbeat_seconds"`
	// CredentialExpiresAt is when the token that sent the heartbeat stops working, if it will.
	CredentialExpiresAt *time.Time `json:"credential_expires_at"`
}

// Rotation is the server's answer to a credential rotation.
type Rotation struct {
	AgentID                string     `json:"agent_id"`
	Token                  string     `json:"token"`
	ExpiresAt              *time.Time `json:"expires_at"`
	PreviousTokenExpiresAt *time.Time `json:"previous_token_expires_at"`
}

// APIError is a non-2xx answer (Status > 0) or a transport failure (Status 0).
type APIError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
	Err        error         // the transport error when Status is 0
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return "request failed: " + e.Err.Error()
	}
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

func (e *APIError) Unwrap() error { return e.Err }

// Retryable reports whether the same request may succeed later: transport failures, 429
// and 5xx. Any other 4xx will fail the same way again.
func (e *APIError) Retryable() bool {
	return e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Enroll exchanges an enrollment token for an identity.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (*Enrollment, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var out Enrollment
	if err := c.post(ctx, "/api/v1/agents/enroll", "", body, http.StatusCreated, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat posts an encoded heartbeat body with the given bearer token.
func (c *Client) Heartbeat(ctx context.Context, agentID, token string, body []byte) (*HeartbeatResult, error) {
	var out HeartbeatResult
	path := "/api/v1/agents/" + url.PathEscape(agentID) + "/telemetry/heartbeat"
	if err := c.post(ctx, path, token, body, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rotate exchanges the agent's current token for a new one; the old one keeps working for
// the server's grace period.
func (c *Client) Rotate(ctx context.Context, agentID, token string) (*Rotation, error) {
	var out Rotation
	path := "/api/v1/agents/" + url.PathEscape(agentID) + "/credentials/rotate"
	if err := c.post(ctx, path, token, []byte("{}"), http.StatusOK, &out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, &APIError{Status: http.StatusOK, Err: fmt.Errorf("the rotation answer holds no token")}
	}
	return &out, nil
}

func (c *Client) post(ctx context.Context, path, token string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "oneprotect-agent/"+Version)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &APIError{Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &APIError{Err: err}
	}
	if resp.StatusCode != want {
		apiErr := &APIError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil {
			apiErr.Code, apiErr.Message = eb.Error.Code, eb.Error.Message
		}
		return apiErr
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &APIError{Status: resp.StatusCode, Err: fmt.Errorf("unreadable answer: %w", err)}
	}
	return nil
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
