package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"github.com/99designs/gqlgen/graphql"
)

// GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/). gqlgen's transports
// do most of it; HTTP closes the gaps:
//   - a POST whose body is not application/json is 415, not gqlgen's 400;
//   - a mutation or subscription sent with GET is 405 with Allow: POST, not gqlgen's 406;
//   - with application/graphql-response+json, a request that never executed (parse,
//     validation, cost or variable errors) is 400 and carries no "data" entry;
//   - with application/json, such a request stays 200 (the spec's compatible mode) instead of
//     gqlgen's 422, and also carries no "data" entry.
//
// Whether execution started is told by executionMarker, a gqlgen extension that runs only
// once an operation passed parsing, validation, the cost limit and variable coercion.

const graphqlResponseJSON = "application/graphql-response+json"

type executedKey struct{}

// getKey marks a GET request: its non-query operations are refused by gqlgen's GET
// transport (made 405 below), before anything else looks at them.
type getKey struct{}

// executionMarker records in the request context that the operation reached execution.
type executionMarker struct{}

func (executionMarker) ExtensionName() string                   { return "ExecutionMarker" }
func (executionMarker) Validate(graphql.ExecutableSchema) error { return nil }
func (executionMarker) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if p, ok := ctx.Value(executedKey{}).(*bool); ok {
		*p = true
	}
	return next(ctx)
}

// HTTP wraps the gqlgen server for /query.
func HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r) // websocket
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodOptions:
		case http.MethodPost:
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				writeHTTPError(w, http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE",
					"the body must be application/json")
				return
			}
		default:
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			writeHTTPError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use POST (or GET for queries)")
			return
		}
		if r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		executed := false
		rec := &recorder{header: w.Header(), status: http.StatusOK}
		ctx := context.WithValue(r.Context(), executedKey{}, &executed)
		if r.Method == http.MethodGet {
			ctx = context.WithValue(ctx, getKey{}, true)
		}
		next.ServeHTTP(rec, r.WithContext(ctx))

		if rec.status == http.StatusNotAcceptable && r.Method == http.MethodGet {
			w.Header().Set("Allow", "POST")
			writeHTTPError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
				"GET carries queries only: send mutations with POST")
			return
		}
		status, body := rec.status, rec.body.Bytes()
		if !executed {
			body = withoutData(body)
			if status == http.StatusOK || status == http.StatusUnprocessableEntity {
				status = http.StatusOK
				if strings.HasPrefix(w.Header().Get("Content-Type"), graphqlResponseJSON) {
					status = http.StatusBadRequest
				}
			}
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	})
}

// recorder holds gqlgen's answer so its status can be corrected before anything is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// withoutData drops the "data": null gqlgen writes for a request that never executed.
func withoutData(body []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	if d, ok := m["data"]; !ok || string(d) != "null" {
		return body
	}
	delete(m, "data")
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{
		"message": msg, "extensions": map[string]any{"code": code}}}})
}
