package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"unicode/utf8"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Check agrees with encoding/json on what is JSON, refuses only with an invalid_request that
// names a field, and what it accepts decodes without replacement characters that were not
// in the input.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":1,"b":[true,false,null,-1.5e3]}`, `{"a":1,"a":2}`,
		`{"a":"\u0000"}`, "{\"a\":\"\xff\"}", `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d"}`, `"x"`, `{"a":{"b":{"b":1,"b":2}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Check(data)
		var syn *SyntaxError
		var de *domain.Error
		switch {
		case err == nil:
			if !json.Valid(data) {
				t.Fatalf("accepted what encoding/json refuses: %q", data)
			}
			if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
				t.Fatalf("accepted invalid UTF-8 or a NUL: %q", data)
			}
			var v any
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber() // 1E1000 is JSON, only too big for a float64
			if dec.Decode(&v) != nil {
				t.Fatalf("accepted what does not decode: %q", data)
			}
			if out, _ := json.Marshal(v); bytes.Contains(out, []byte("\ufffd")) && !bytes.Contains(data, []byte("\ufffd")) &&
				!bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`)) {
				t.Fatalf("accepted what decodes with replacement characters: %q", data)
			}
		case errors.As(err, &syn):
			if json.Valid(data) {
				t.Fatalf("called valid JSON malformed (%v): %q", err, data)
			}
		case errors.As(err, &de):
			if de.Code != domain.CodeInvalidRequest || de.Field == "" {
				t.Fatalf("refusal without a field: %#v", de)
			}
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
	})
}

// FuzzGraphQLRequest feeds POST /query bodies through the guard in front of gqlgen: no
// panic, a refusal is a small 400 INVALID_REQUEST that never echoes the body, and what
// passes reaches the next handler unchanged.
func FuzzGraphQLRequest(f *testing.F) {
	for _, s := range []string{
		`{"query":"{ viewer { id } }"}`,
		`{"query":"mutation($a: ID!) { x }","variables":{"a":"1","input":{"hostname":"a","hostname":"b"}}}`,
		"{\"query\":\"{ a }\",\"variables\":{\"h\":\"\xff\"}}",
		`{"query":"q","query":"r"}`,
		`<<<<`,
		`{"variables":{"x":"\u0000"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var seen []byte
		next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			buf := new(bytes.Buffer)
			_, _ = buf.ReadFrom(r.Body)
			seen = buf.Bytes()
			w.WriteHeader(http.StatusOK)
		})
		req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		GraphQL(next).ServeHTTP(rec, req)
		if seen != nil {
			if !bytes.Equal(seen, data) {
				t.Fatal("the body reached gqlgen changed")
			}
			return
		}
		if rec.Code != http.StatusBadRequest || rec.Body.Len() > 1024 {
			t.Fatalf("refusal: %d, %d bytes", rec.Code, rec.Body.Len())
		}
		var out struct {
			Errors []struct {
				Extensions map[string]any `json:"extensions"`
			} `json:"errors"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &out) != nil || len(out.Errors) != 1 || out.Errors[0].Extensions["code"] != "INVALID_REQUEST" {
			t.Fatalf("refusal is not one INVALID_REQUEST error: %s", rec.Body.Bytes())
		}
	})
}
