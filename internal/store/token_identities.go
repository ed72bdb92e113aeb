package store

import (
	"context"

	"github.com/oneprotect/telemetry/internal/domain"
)

// EnrollmentToken returns one enrollment token of the tenant, or ErrNotFound.
func (s *Store) EnrollmentToken(ctx context.Context, tenantID, id string) (*domain.EnrollmentToken, error) {
	var row enrollmentTokenRow
	if err := s.R.NewSelect().Model(&row).Where("tenant_id = ? AND id = ?", tenantID, id).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	return row.toDomain(), nil
}
