package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

// CredentialRotation is one agent credential rotation: the new token, and when the tokens
// it supersedes stop working (the grace period).
type CredentialRotation struct {
	TenantID    string
	AgentID     string
	PrincipalID string
	Token       NewAPIToken
	Now         time.Time
	// OldTokensExpireAt is when the principal's other live tokens stop authenticating; a
	// token that already expires sooner keeps its earlier expiry.
	OldTokensExpireAt time.Time
	// BumpEpoch moves the credential epoch, so that every replica forgets its cached tokens
	// (needed when the grace period is shorter than a replica may cache a token).
	BumpEpoch bool
	Event     *domain.Event
}

// RotateAgentCredential stores a new token for an agent's service account, makes its other
// tokens expire at OldTokensExpireAt, deletes its tokens that have already expired (so
// rotations never pile up rows) and appends the audit event, in one transaction. It returns
// the identity as read inside the transaction; when the identity is not ENROLLED or ACTIVE
// nothing is written and the caller tells why from its status. ErrNotFound: no such
// identity in the tenant.
func (s *Store) RotateAgentCredential(ctx context.Context, r *CredentialRotation) (*domain.AgentIdentity, error) {
	var id *domain.AgentIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if id, err = s.agentIdentity(ctx, tx, r.TenantID, r.AgentID); err != nil {
			return err
		}
		if !id.Status.CanSubmit() || id.PrincipalID != r.PrincipalID {
			return nil
		}
		now, until := Micros(r.Now), Micros(r.OldTokensExpireAt)
		if _, err := tx.NewDelete().Model((*apiTokenRow)(nil)).
			Where("tenant_id = ? AND principal_id = ? AND expires_at IS NOT NULL AND expires_at <= ?", r.TenantID, r.PrincipalID, now).
			Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*apiTokenRow)(nil)).
			Set("expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < ? THEN expires_at ELSE ? END", until, until).
			Where("tenant_id = ? AND principal_id = ? AND revoked_at IS NULL", r.TenantID, r.PrincipalID).
			Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&apiTokenRow{ID: r.Token.ID, TenantID: r.TenantID, PrincipalID: r.PrincipalID,
			TokenHash: r.Token.Hash, Prefix: r.Token.Prefix, ExpiresAt: optMicros(r.Token.ExpiresAt), CreatedAt: now,
		}).Exec(ctx); err != nil {
			return err
		}
		if r.BumpEpoch {
			if err := bumpCredentialEpoch(ctx, tx); err != nil {
				return err
			}
		}
		return appendEvent(ctx, tx, r.Event)
	})
	if err != nil {
		return nil, mapErr(err)
	}
	return id, nil
}
