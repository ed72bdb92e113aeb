package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/pacing"
)

// Env is the whole service on one fresh database, behind an httptest server.
type Env struct {
	T      testing.TB
	DSN    string
	App    *app.App
	Server *httptest.Server
	Clock  *Clock
	// HTTP sends Do's requests (nil: http.DefaultClient; a TLS server needs its own).
	HTTP *http.Client
}

// Option adjusts the service's configuration before it starts.
type Option func(*app.Config)

// New starts the service on dsn with a controllable clock.
func New(t testing.TB, dsn string, opts ...Option) *Env {
	t.Helper()
	clock := NewClock()
	cfg := app.Defaults()
	cfg.DB = dsn
	cfg.Now = clock.Now
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	// The test clock stands still, so no rate-limit bucket would ever refill: the limits are
	// off unless a test turns them on with an Option.
	cfg.AgentRateLimit, cfg.EnrollRateLimit = pacing.Rate{}, pacing.Rate{}
	if testing.Verbose() {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(func() {
		srv.Close()
		a.Close()
	})
	return &Env{T: t, DSN: dsn, App: a, Server: srv, Clock: clock}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// Response is a decoded HTTP answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// ErrorCode returns a REST error body's code ("" if none).
func (r *Response) ErrorCode() string {
	if e, ok := r.JSON["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

// Do sends a request with an optional bearer token and JSON body (a string is sent as is).
func (e *Env) Do(method, path, token string, body any, header ...string) *Response {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.T.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.Server.URL+path, rd)
	if err != nil {
		e.T.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := http.DefaultClient
	if e.HTTP != nil {
		client = e.HTTP
	}
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		e.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	// Every REST answer of every test is checked against the served OpenAPI document.
	if err := CheckOpenAPI(req, resp.StatusCode, resp.Header, data); err != nil {
		e.T.Errorf("%s %s: the %d answer does not match the OpenAPI document: %v\n%s", method, path, resp.StatusCode, err, data)
	}
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
	_ = json.Unmarshal(data, &out.JSON)
	return out
}

// GQLResult is a decoded GraphQL answer.
type GQLResult struct {
	Status int
	Data   map[string]any
	Errors []GQLError
	Raw    []byte
}

// GQLError is one GraphQL error.
type GQLError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// Code returns the first error's extensions.code ("" without errors).
func (r *GQLResult) Code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// GQL posts a GraphQL operation.
func (e *Env) GQL(token, query string, vars map[string]any) *GQLResult {
	e.T.Helper()
	resp := e.Do(http.MethodPost, "/query", token, map[string]any{"query": query, "variables": vars})
	var out struct {
		Data   map[string]any `json:"data"`
		Errors []GQLError     `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		e.T.Fatalf("GraphQL answer is not JSON (%d): %s", resp.Status, resp.Body)
	}
	return &GQLResult{Status: resp.Status, Data: out.Data, Errors: out.Errors, Raw: resp.Body}
}

// MustGQL posts a GraphQL operation and fails the test on any error.
func (e *Env) MustGQL(token, query string, vars map[string]any) map[string]any {
	e.T.Helper()
	r := e.GQL(token, query, vars)
	if len(r.Errors) > 0 {
		e.T.Fatalf("GraphQL errors: %s", r.Raw)
	}
	return r.Data
}
