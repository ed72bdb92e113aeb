package auth

// TokenCacheTTL is the longest a replica trusts a cached token without reading it again,
// whatever the credential epoch says: a change to a token that only shortens its life by more
// than this (an agent credential's grace period after a rotation) reaches every replica in
// time without moving the epoch, which would empty every replica's cache.
const TokenCacheTTL = tokenCacheTTL

// ForgetToken drops one token from this replica's cache, so that its next use reads it again.
func (a *Authenticator) ForgetToken(hash string) {
	if a.cache != nil {
		a.purges.Add(1) // a read of it under way must not cache it again (Authenticate)
		a.cache.Remove(hash)
	}
}
