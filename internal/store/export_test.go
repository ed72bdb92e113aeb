package store

import (
	"context"

	"github.com/oneprotect/telemetry/internal/projection"
)

// EnrollTogether runs the enrollments as one batch of the write engine does: in one
// transaction, through the enrollment group. An enrollment's own outcome is Answer.
func EnrollTogether(ctx context.Context, s *Store, es []*Enrollment) error {
	jobs := make([]*writeJob, len(es))
	for i, e := range es {
		jobs[i] = &writeJob{key: "enroll", group: s.enr.group, item: e}
	}
	return s.runBatch(ctx, jobs)
}

// Answer is what the enrollment's caller is told when its batch commits.
func Answer(e *Enrollment) error { return e.answer }

// AssetSnapshot reads an asset's stored inventory, as the heartbeat's slow path does.
func AssetSnapshot(ctx context.Context, s *Store, tenantID string, assetRef int64) (projection.Snapshot, error) {
	return s.assetSnapshot(ctx, s.R.DB, tenantID, assetRef)
}
