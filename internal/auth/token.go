// Package auth mints and verifies bearer tokens, carries the Principal in the request
// context, and holds the authorization checks that services call.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// Token kinds, told apart by their prefix (CONTRACT §2).
const (
	PrefixUser           = "opu_"
	PrefixServiceAccount = "opsa_"
	PrefixEnrollment     = "opet_"
)

// tokenEncoding is lower-case base32 without padding: URL- and shell-safe, unambiguous.
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewToken returns a fresh secret with the given prefix and 256 bits of randomness, and the
// hash under which it is stored. The secret itself is never stored.
func NewToken(prefix string) (secret, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	secret = prefix + tokenEncoding.EncodeToString(b[:])
	return secret, HashToken(secret)
}

// HashToken is the stored form of a token: hex SHA-256. Tokens carry 256 bits of
// randomness, so a fast unsalted hash is enough to make a stolen table useless.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// HashesEqual compares two stored hashes in constant time.
func HashesEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// DisplayPrefix is the part of a token safe to show in listings: its kind and 6 characters.
func DisplayPrefix(secret string) string {
	i := strings.IndexByte(secret, '_')
	if i < 0 || len(secret) < i+7 {
		return ""
	}
	return secret[:i+7]
}

// ParseBearer extracts the token from an Authorization header value; ok is false when the
// header is absent or not a well-formed Bearer credential.
func ParseBearer(header string) (token string, ok bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token = strings.TrimSpace(header[len(scheme):])
	if token == "" || strings.ContainsAny(token, " \t") || len(token) > 256 {
		return "", false
	}
	return token, true
}
