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
	key, err1 := base64.RawURLEncoding.DecodeString(keyPart)
	sig, err2 := base64.RawURLEncoding.DecodeString(sigPart)
	if err1 != nil || err2 != nil || !hmac.Equal(sig, c.mac(tenantID, query, string(key))) {
		return "", bad
	}
	return string(key), nil
}
