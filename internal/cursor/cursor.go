// Package cursor makes opaque keyset cursors that are bound to a tenant and a query and
// cannot be forged: a cursor carries the last key seen, signed with HMAC-SHA256 over the
// tenant, the query's fingerprint and the key. A cursor from another tenant, another query
// or a tampered one fails verification and is refused as INVALID_REQUEST.
package cursor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Codec signs and verifies cursors with one key (shared by all replicas through the database).
type Codec struct {
	Key []byte
}

func (c *Codec) mac(tenantID, query, key string) []byte {
	m := hmac.New(sha256.New, c.Key)
	m.Write([]byte(tenantID))
	m.Write([]byte{0})
	m.Write([]byte(query))
	m.Write([]byte{0})
	m.Write([]byte(key))
	return m.Sum(nil)[:16]
}

// Encode returns the cursor for key within (tenantID, query).
func (c *Codec) Encode(tenantID, query, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key)) + "." +
		base64.RawURLEncoding.EncodeToString(c.mac(tenantID, query, key))
}

// Decode verifies cursor for (tenantID, query) and returns its key. A nil or empty cursor is
// the first page ("").
func (c *Codec) Decode(tenantID, query string, cursor *string) (string, error) {
	if cursor == nil || *cursor == "" {
		return "", nil
	}
	bad := domain.Invalid("after", "the cursor is not valid for this query")
	keyPart, sigPart, ok := strings.Cut(*cursor, ".")
	if !ok || len(*cursor) > 512 {
		return "", bad
	}
	key, ok1 := decodePart(keyPart)
	sig, ok2 := decodePart(sigPart)
	if !ok1 || !ok2 || !hmac.Equal(sig, c.mac(tenantID, query, string(key))) {
		return "", bad
	}
	return string(key), nil
}

// strict refuses what the lenient decoder accepts: non-zero padding bits in the last
// character, and CR or LF anywhere (which even Strict() skips).
var strict = base64.RawURLEncoding.Strict()

// decodePart decodes one part of a cursor and accepts it only if it is the one encoding of
// its bytes, so that every changed character of a cursor makes it invalid.
func decodePart(part string) ([]byte, bool) {
	b, err := strict.DecodeString(part)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != part {
		return nil, false
	}
	return b, true
}
