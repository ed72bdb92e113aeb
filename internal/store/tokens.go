package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

// The lifecycle of API tokens: listing, minting and revoking, the last-used stamp, and the
// credential epoch through which every replica learns that a token was revoked.

type apiTokenListRow struct {
	ID          string `bun:"id"`
	TenantID    string `bun:"tenant_id"`
	PrincipalID string `bun:"principal_id"`
	Prefix      string `bun:"prefix"`
	CreatedAt   int64  `bun:"created_at"`
	ExpiresAt   *int64 `bun:"expires_at"`
	LastUsedAt  *int64 `bun:"last_used_at"`
	RevokedAt   *int64 `bun:"revoked_at"`
}

func (r *apiTokenListRow) toDomain() *domain.APIToken {
	return &domain.APIToken{ID: r.ID, TenantID: r.TenantID, PrincipalID: r.PrincipalID, Prefix: r.Prefix,
		CreatedAt: FromMicros(r.CreatedAt), ExpiresAt: optTime(r.ExpiresAt), LastUsedAt: optTime(r.LastUsedAt),
		RevokedAt: optTime(r.RevokedAt)}
}

const apiTokenColumns = `t.id, t.tenant_id, t.principal_id, t.prefix, t.created_at, t.expires_at, t.last_used_at, t.revoked_at`

// UserAPITokens lists the tokens of the tenant's USER principals (optionally one of them),
// newest first, at most limit.
func (s *Store) UserAPITokens(ctx context.Context, tenantID string, principalID *string, limit int) ([]*domain.APIToken, error) {
	q := `SELECT ` + apiTokenColumns + ` FROM principals p
		JOIN api_tokens t ON t.tenant_id = p.tenant_id AND t.principal_id = p.id
		WHERE p.tenant_id = ? AND p.kind = ?`
	args := []any{tenantID, string(domain.KindUser)}
	if principalID != nil {
		q += ` AND p.id = ?`
		args = append(args, *principalID)
	}
	q += ` ORDER BY t.created_at DESC, t.id DESC LIMIT ?`
	args = append(args, limit)
	var rows []apiTokenListRow
	if err := s.R.NewRaw(q, args...).Scan(ctx, &rows); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, mapErr(err)
	}
	out := make([]*domain.APIToken, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// UserAPIToken returns one token of a USER principal of the tenant, or ErrNotFound (also
// for a service account's token).
func (s *Store) UserAPIToken(ctx context.Context, tenantID, id string) (*domain.APIToken, error) {
	return s.apiToken(ctx, s.R, &tenantID, id, true)
}

func (s *Store) apiToken(ctx context.Context, db bun.IDB, tenantID *string, id string, usersOnly bool) (*domain.APIToken, error) {
	q := `SELECT ` + apiTokenColumns + ` FROM api_tokens t JOIN principals p ON p.id = t.principal_id AND p.tenant_id = t.tenant_id
		WHERE t.id = ?`
	args := []any{id}
	if tenantID != nil {
		q += ` AND t.tenant_id = ?`
		args = append(args, *tenantID)
	}
	if usersOnly {
		q += ` AND p.kind = ?`
		args = append(args, string(domain.KindUser))
	}
	var row apiTokenListRow
	if err := db.NewRaw(q, args...).Scan(ctx, &row); err != nil {
		return nil, mapErr(err)
	}
	return row.toDomain(), nil
}

// CreateAPIToken stores a new token for an existing principal of the tenant.
func (s *Store) CreateAPIToken(ctx context.Context, tenantID, principalID string, tok NewAPIToken, now time.Time) (*domain.APIToken, error) {
	row := &apiTokenRow{ID: tok.ID, TenantID: tenantID, PrincipalID: principalID, TokenHash: tok.Hash,
		Prefix: tok.Prefix, ExpiresAt: optMicros(tok.ExpiresAt), CreatedAt: Micros(now)}
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &domain.APIToken{ID: tok.ID, TenantID: tenantID, PrincipalID: principalID, Prefix: tok.Prefix,
		CreatedAt: FromMicros(row.CreatedAt), ExpiresAt: optTime(row.ExpiresAt)}, nil
}

// RevokeAPIToken revokes a token and moves the credential epoch in the same transaction.
// With a tenant it finds only USER tokens of that tenant (the GraphQL mutation); without
// one, any token (the operator's CLI). Revoking a revoked token changes nothing and
// returns it as it is. A token that does not exist is ErrNotFound.
func (s *Store) RevokeAPIToken(ctx context.Context, tenantID *string, id string, now time.Time) (*domain.APIToken, error) {
	var out *domain.APIToken
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		tok, err := s.apiToken(ctx, tx, tenantID, id, tenantID != nil)
		if err != nil {
			return err
		}
		if tok.RevokedAt == nil {
			if _, err := tx.NewRaw(`UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`,
				Micros(now), id).Exec(ctx); err != nil {
				return err
			}
			if err := bumpCredentialEpoch(ctx, tx); err != nil {
				return err
			}
			at := FromMicros(Micros(now))
			tok.RevokedAt = &at
		}
		out = tok
		return nil
	})
	return out, err
}

// bumpCredentialEpoch tells every replica to forget the tokens it has cached. Anything that
// revokes a token, or shortens its life, calls it in the same transaction.
func bumpCredentialEpoch(ctx context.Context, tx bun.IDB) error {
	_, err := tx.NewRaw(`UPDATE credential_epoch SET epoch = epoch + 1 WHERE id = 1`).Exec(ctx)
	return err
}

// BumpCredentialEpoch is bumpCredentialEpoch in a transaction of its own.
func (s *Store) BumpCredentialEpoch(ctx context.Context) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error { return bumpCredentialEpoch(ctx, tx) })
}

// CredentialEpoch returns the current credential epoch.
func (s *Store) CredentialEpoch(ctx context.Context) (int64, error) {
	var epoch int64
	if err := s.R.NewRaw(`SELECT epoch FROM credential_epoch WHERE id = 1`).Scan(ctx, &epoch); err != nil {
		return 0, mapErr(err)
	}
	return epoch, nil
}

// TokenByHash returns the principal and token of a live (unrevoked, unexpired) token with
// this hash, and the stored hash for a constant-time comparison by the caller; no such
// token is all nil.
func (s *Store) TokenByHash(ctx context.Context, hash string, now time.Time) (*domain.Principal, *domain.APIToken, string, error) {
	st, err := s.reads.prepared(ctx, s, &s.reads.token, tokenRead)
	if err != nil {
		return nil, nil, "", mapErr(err)
	}
	var row principalRow
	var tokID, tokenHash, prefix string
	var tokCreated int64
	var expiresAt, lastUsedAt *int64
	err = st.QueryRowContext(ctx, hash, Micros(now)).Scan(&row.ID, &row.TenantID, &row.Kind, &row.Role, &row.Name,
		&row.ActorKind, &row.ActorID, &row.CreatedAt, &tokID, &tokenHash, &prefix, &tokCreated, &expiresAt, &lastUsedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, "", nil
	}
	if err != nil {
		return nil, nil, "", mapErr(err)
	}
	p := row.toDomain()
	p.ExpiresAt = optTime(expiresAt)
	p.TokenID, p.TokenHash, p.TokenIssuedAt = tokID, tokenHash, FromMicros(tokCreated)
	tok := &domain.APIToken{ID: tokID, TenantID: p.TenantID, PrincipalID: p.ID, Prefix: prefix,
		CreatedAt: FromMicros(tokCreated), ExpiresAt: p.ExpiresAt, LastUsedAt: optTime(lastUsedAt)}
	return p, tok, tokenHash, nil
}

// tokenRead is on every request whose token is not cached (at fleet scale, an agent's first
// heartbeat after a start): a statement prepared once, not a query built per call.
const tokenRead = `SELECT p.id, p.tenant_id, p.kind, p.role, p.name, p.actor_kind, p.actor_id, p.created_at,
  t.id, t.token_hash, t.prefix, t.created_at, t.expires_at, t.last_used_at
FROM api_tokens AS t
JOIN principals AS p ON p.id = t.principal_id AND p.tenant_id = t.tenant_id
WHERE t.token_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)`

// TouchAPIToken records that a token was used at now, unless it was recorded less than
// every ago (last_used_at is coarse on purpose: no write per request).
func (s *Store) TouchAPIToken(ctx context.Context, id string, now time.Time, every time.Duration) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewRaw(`UPDATE api_tokens SET last_used_at = ?
			WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)`,
			Micros(now), id, Micros(now.Add(-every))).Exec(ctx)
		return err
	})
}
