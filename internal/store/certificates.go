package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

type certificateRow struct {
	bun.BaseModel `bun:"table:issued_certificates"`
	Serial        string `bun:"serial,pk"`
	TenantID      string `bun:"tenant_id"`
	SubjectKind   string `bun:"subject_kind"`
	SubjectID     string `bun:"subject_id"`
	Fingerprint   string `bun:"fingerprint"`
	NotBefore     int64  `bun:"not_before"`
	NotAfter      int64  `bun:"not_after"`
	IssuedAt      int64  `bun:"issued_at"`
	Reason        string `bun:"reason"`
}

func toCertificateRow(c *domain.Certificate) *certificateRow {
	return &certificateRow{Serial: c.Serial, TenantID: c.TenantID, SubjectKind: string(c.SubjectKind), SubjectID: c.SubjectID,
		Fingerprint: c.Fingerprint, NotBefore: Micros(c.NotBefore), NotAfter: Micros(c.NotAfter), IssuedAt: Micros(c.IssuedAt),
		Reason: c.Reason}
}

func (r *certificateRow) toDomain() *domain.Certificate {
	return &domain.Certificate{Serial: r.Serial, TenantID: r.TenantID, SubjectKind: domain.ActorKind(r.SubjectKind),
		SubjectID: r.SubjectID, Fingerprint: r.Fingerprint, NotBefore: FromMicros(r.NotBefore), NotAfter: FromMicros(r.NotAfter),
		IssuedAt: FromMicros(r.IssuedAt), Reason: r.Reason}
}

func insertCertificate(ctx context.Context, db bun.IDB, c *domain.Certificate) error {
	_, err := db.NewInsert().Model(toCertificateRow(c)).Exec(ctx)
	return err
}

// RecordCertificate records a certificate signed outside an enrollment (a renewal, a
// collector's certificate).
func (s *Store) RecordCertificate(ctx context.Context, c *domain.Certificate) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error { return insertCertificate(ctx, tx, c) })
}

// Certificates lists the certificates issued to one subject of the tenant, newest first.
func (s *Store) Certificates(ctx context.Context, tenantID string, kind domain.ActorKind, subjectID string) ([]*domain.Certificate, error) {
	var rows []certificateRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND subject_kind = ? AND subject_id = ?", tenantID, string(kind), subjectID).
		Order("issued_at DESC", "serial").Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Certificate, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// RevokedCertificate is a CRL entry: an unexpired certificate of a REVOKED agent identity.
type RevokedCertificate struct {
	Serial    string
	RevokedAt time.Time
}

// RevokedCertificates lists, across tenants (the CA and its CRL are shared), the unexpired
// certificates whose agent identity is REVOKED, at most limit of them.
func (s *Store) RevokedCertificates(ctx context.Context, now time.Time, limit int) ([]RevokedCertificate, error) {
	var rows []struct {
		Serial    string `bun:"serial"`
		RevokedAt *int64 `bun:"revoked_at"`
	}
	err := s.R.NewRaw(`SELECT c.serial, i.revoked_at FROM issued_certificates c
  JOIN agent_identities i ON i.agent_id = c.subject_id AND i.tenant_id = c.tenant_id
  WHERE c.not_after > ? AND c.subject_kind = ? AND i.status = ?
  ORDER BY c.serial LIMIT ?`, Micros(now), string(domain.ActorAgent), string(domain.StatusRevoked), limit).Scan(ctx, &rows)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]RevokedCertificate, len(rows))
	for i, r := range rows {
		out[i].Serial = r.Serial
		if r.RevokedAt != nil {
			out[i].RevokedAt = FromMicros(*r.RevokedAt)
		} else {
			out[i].RevokedAt = now
		}
	}
	return out, nil
}
