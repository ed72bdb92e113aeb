package rest

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/strictjson"
)

// The decoders' promises, for any input: no panic; every refusal is invalid_request naming
// a field (never internal: that would be a 500); what is accepted holds no duplicate key,
// invalid UTF-8 or NUL; and an accepted heartbeat hashes the same twice (idempotency).
// Seeds: testdata/fuzz/<target>/ and the f.Add calls. CI runs each target briefly.

func wantRefusal(t *testing.T, err error) {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != domain.CodeInvalidRequest || de.Field == "" {
		t.Fatalf("refusal is not invalid_request with a field: %#v", err)
	}
	if len(de.Field) > 210 || len(de.Message) > 600 {
		t.Fatalf("refusal carries too much of the request: field %d bytes, message %d bytes", len(de.Field), len(de.Message))
	}
}

func cleanText(t *testing.T, what string, s *string) {
	t.Helper()
	if s != nil && (!utf8.ValidString(*s) || strings.IndexByte(*s, 0) >= 0) {
		t.Fatalf("accepted %s %q holds invalid UTF-8 or NUL", what, *s)
	}
}

func FuzzDecodeHeartbeat(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"heartbeat_id":"h1","sent_at":"2026-11-28T12:00:00Z","hostname":"web-01","agent_version":"1.4.2"}`,
		`{"inventory":{"os":{"name":"Debian","arch":"amd64"},"ip_addresses":["10.0.0.5"],"cpu_count":4,"facts":{"k":"v"}}}`,
		`{"tenant_id":"a","tenant_id":"b"}`,
		`{"hostname":"a\u0000"}`,
		"{\"hostname\":\"\xff\"}",
		`{"inventory":{"facts":{"k":"\ud800"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hb, claims, err := decodeHeartbeat(data)
		if err == nil {
			err = hb.Validate()
		}
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if strictjson.Check(data) != nil {
			t.Fatal("accepted a body the strict check refuses")
		}
		for _, v := range []struct {
			name string
			s    *string
		}{{"heartbeat_id", hb.HeartbeatID}, {"hostname", hb.Hostname}, {"agent_version", hb.AgentVersion},
			{"tenant_id", claims.TenantID}, {"agent_id", claims.AgentID}} {
			cleanText(t, v.name, v.s)
		}
		if inv := hb.Inventory; inv != nil {
			for k, v := range inv.Facts {
				cleanText(t, "fact key", &k)
				s := v.(string)
				cleanText(t, "fact value", &s)
			}
		}
		h1, err1 := hb.Hash()
		h2, err2 := hb.Hash()
		if err1 != nil || err2 != nil || h1 != h2 {
			t.Fatalf("hash of an accepted heartbeat: %q %v, %q %v", h1, err1, h2, err2)
		}
	})
}

func FuzzDecodeEnroll(f *testing.F) {
	for _, s := range []string{
		`{"enrollment_token":"opet_x","hostname":"web-01","agent_version":"1.0.0","machine_id":"m-1"}`,
		`{"enrollment_token":"a","enrollment_token":"b"}`,
		`{"enrollment_token":"opet_x","hostname":"h\u0000"}`,
		"{\"enrollment_token\":\"opet_x\",\"machine_id\":\"\xc3\"}",
		`{"hostname":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeEnroll(data)
		if err != nil {
			wantRefusal(t, err)
			return
		}
		if strictjson.Check(data) != nil {
			t.Fatal("accepted a body the strict check refuses")
		}
		cleanText(t, "enrollment_token", &req.EnrollmentToken)
		cleanText(t, "hostname", req.Hostname)
		cleanText(t, "agent_version", req.AgentVersion)
		cleanText(t, "machine_id", req.MachineID)
	})
}
