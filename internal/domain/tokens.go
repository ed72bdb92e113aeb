package domain

import "time"

// APIToken is a bearer token as listed to admins: never the secret, nor its hash.
type APIToken struct {
	ID          string
	TenantID    string
	PrincipalID string
	// Prefix is the token's kind and first characters, to recognise it.
	Prefix    string
	CreatedAt time.Time
	ExpiresAt *time.Time
	// LastUsedAt is coarse: it is updated at most once a minute per token.
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// Live reports whether the token still authenticates at now.
func (t *APIToken) Live(now time.Time) bool {
	return t.RevokedAt == nil && (t.ExpiresAt == nil || now.Before(*t.ExpiresAt))
}
