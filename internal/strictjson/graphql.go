package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/oneprotect/telemetry/internal/domain"
)

// GraphQL checks GraphQL-over-HTTP requests before gqlgen decodes them: a POST body (query,
// variables, extensions) and a GET's variables and extensions parameters are refused with 400
// INVALID_REQUEST, naming the field (variables.input.hostname), when they hold a duplicate
// key or invalid UTF-8, which gqlgen's decoder would hide (last key wins, U+FFFD). A NUL is
// left to the services, which refuse it in every text they take and name the field as for
// any other bad value. Malformed JSON is left to gqlgen, which answers it.
// Websocket upgrades pass through (their messages are read by the websocket transport).
func GraphQL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		switch r.Method {
		case http.MethodPost:
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if mt != "application/json" {
				break // answered 415 further in
			}
			data, err := io.ReadAll(r.Body)
			if err != nil {
				// Too large or cut short: gqlgen meets the same error where it reads the body.
				r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), errReader{err}))
				break
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
			if err := CheckGraphQLBody(data); err != nil {
				writeGraphQLError(w, err)
				return
			}
		case http.MethodGet:
			if err := CheckGraphQLQuery(r.URL.RawQuery); err != nil {
				writeGraphQLError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// CheckGraphQLBody checks a POST /query body; only refusals are returned (*domain.Error),
// malformed JSON is not (gqlgen answers it).
func CheckGraphQLBody(data []byte) error {
	err := CheckAllowNUL(data)
	var de *domain.Error
	if errors.As(err, &de) {
		return de
	}
	return nil
}

// CheckGraphQLQuery checks the parameters of a GET /query.
func CheckGraphQLQuery(rawQuery string) error {
	// Decoded the way the GET transport decodes them.
	q, err := urlValues(rawQuery)
	if err != nil {
		return nil // the transport answers an unparsable query string
	}
	for _, name := range []string{"query", "operationName"} {
		for _, v := range q[name] {
			if !utf8.ValidString(v) {
				return domain.Invalid(name, "%s must be valid UTF-8", name)
			}
		}
	}
	for _, name := range []string{"variables", "extensions"} {
		for _, v := range q[name] {
			err := checkIn([]byte(v), name)
			var de *domain.Error
			if errors.As(err, &de) {
				return de
			}
		}
	}
	return nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func writeGraphQLError(w http.ResponseWriter, err error) {
	var de *domain.Error
	errors.As(err, &de)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{
		"message":    de.Message,
		"extensions": map[string]any{"code": strings.ToUpper(string(de.Code)), "field": de.Field},
	}}})
}

func urlValues(raw string) (map[string][]string, error) {
	return url.ParseQuery(raw)
}
