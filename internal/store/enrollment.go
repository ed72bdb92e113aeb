package store

import (
	"context"
	"database/sql"
	"errors"
	"hash/fnv"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

type enrollmentTokenRow struct {
	bun.BaseModel `bun:"table:enrollment_tokens"`
	ID            string  `bun:"id,pk"`
	TenantID      string  `bun:"tenant_id"`
	SiteID        string  `bun:"site_id"`
	CollectorID   *string `bun:"collector_id"`
	TokenHash     string  `bun:"token_hash"`
	Prefix        string  `bun:"prefix"`
	MaxUses       int     `bun:"max_uses"`
	Uses          int     `bun:"uses"`
	ExpiresAt     int64   `bun:"expires_at"`
	RevokedAt     *int64  `bun:"revoked_at"`
	CreatedBy     string  `bun:"created_by"`
	CreatedAt     int64   `bun:"created_at"`
}

func (r *enrollmentTokenRow) toDomain() *domain.EnrollmentToken {
	return &domain.EnrollmentToken{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, CollectorID: r.CollectorID,
		Prefix: r.Prefix, MaxUses: r.MaxUses, Uses: r.Uses, ExpiresAt: FromMicros(r.ExpiresAt),
		RevokedAt: optTime(r.RevokedAt), CreatedBy: r.CreatedBy, CreatedAt: FromMicros(r.CreatedAt)}
}

// CreateEnrollmentToken stores a token by its hash.
func (s *Store) CreateEnrollmentToken(ctx context.Context, t *domain.EnrollmentToken, hash string) error {
	row := &enrollmentTokenRow{ID: t.ID, TenantID: t.TenantID, SiteID: t.SiteID, CollectorID: t.CollectorID,
		TokenHash: hash, Prefix: t.Prefix, MaxUses: t.MaxUses, ExpiresAt: Micros(t.ExpiresAt),
		CreatedBy: t.CreatedBy, CreatedAt: Micros(t.CreatedAt)}
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Exec(ctx)
		return err
	})
}

// EnrollmentTokens lists the tenant's tokens newest first after afterID, up to limit+1.
func (s *Store) EnrollmentTokens(ctx context.Context, tenantID, afterID string, limit int) ([]*domain.EnrollmentToken, error) {
	var rows []enrollmentTokenRow
	q := s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID)
	if afterID != "" {
		q = q.Where("id < ?", afterID)
	}
	if err := q.Order("id DESC").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.EnrollmentToken, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CountEnrollmentTokens counts the tenant's enrollment tokens.
func (s *Store) CountEnrollmentTokens(ctx context.Context, tenantID string) (int, error) {
	n, err := s.R.NewSelect().Model((*enrollmentTokenRow)(nil)).Where("tenant_id = ?", tenantID).Count(ctx)
	return int(n), mapErr(err)
}

// RevokeEnrollmentToken revokes one of the tenant's tokens (again is a no-op) and returns it.
func (s *Store) RevokeEnrollmentToken(ctx context.Context, tenantID, id string, now time.Time) (*domain.EnrollmentToken, error) {
	var row enrollmentTokenRow
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewUpdate().Model((*enrollmentTokenRow)(nil)).Set("revoked_at = ?", Micros(now)).
			Where("tenant_id = ? AND id = ? AND revoked_at IS NULL", tenantID, id).Exec(ctx)
		if err != nil {
			return err
		}
		return tx.NewSelect().Model(&row).Where("tenant_id = ? AND id = ?", tenantID, id).Scan(ctx)
	})
	if err != nil {
		return nil, err
	}
	return row.toDomain(), nil
}

// Enrollment is one enrollment to write: the new identity (AgentID, AssetID, MachineID,
// Hostname, AgentVersion, Status, EnrolledAt, PrincipalID), its service-account principal and
// that principal's token. Plan, from the enrollment service, decides the rest once the token
// is known; the store only writes what it is given.
type Enrollment struct {
	TokenHash string
	Now       time.Time
	Identity  *domain.AgentIdentity
	Principal *domain.Principal
	Token     NewAPIToken
	// Plan runs inside the enrollment's transaction once the token has granted the enrollment
	// and the machine's earlier identities in the token's tenant are read (newest first; none
	// of them changes before the commit). It binds Identity and Principal to the grant's tenant
	// and site and says what else to write. It may run more than once (a batch that is run
	// again), so it must depend on nothing but its arguments and the enrollment's inputs.
	Plan func(g *EnrollmentGrant, previous []*domain.AgentIdentity) (*EnrollmentPlan, error)

	answer error // the outcome for the caller when the transaction itself succeeds
}

// EnrollmentGrant is what a valid enrollment token grants: one identity in its tenant, on its
// site (and collector), authorized by the admin who minted it.
type EnrollmentGrant struct {
	TokenID     string
	TenantID    string
	SiteID      string
	CollectorID *string
	CreatedBy   string
}

// EnrollmentPlan is what an enrollment writes besides the identity, its principal and token.
type EnrollmentPlan struct {
	// Supersede are earlier identities (from previous, not REVOKED) to revoke with Reason.
	Supersede []*domain.AgentIdentity
	Reason    string
	// AssetOf, when set, is the earlier identity whose asset the new identity continues: the
	// asset (if it has appeared) and its liveness row follow the new identity and site. Nil: a
	// new asset, whose ref is the new identity's.
	AssetOf *domain.AgentIdentity
	// Events are appended in this order.
	Events []*domain.Event
	// Certificate, when set, is recorded.
	Certificate *domain.Certificate
}

// ErrInvalidEnrollmentToken: unknown, expired, used-up or revoked, deliberately alike.
var ErrInvalidEnrollmentToken = &domain.Error{Code: domain.CodeInvalidEnrollmentToken,
	Message: "the enrollment token is unknown, expired, used up or revoked"}

// Enroll consumes one use of the token and writes the enrollment, atomically: a use is taken
// only while uses stay within max_uses, so N concurrent enrollments on a token of K uses create
// exactly min(N, K) identities, on any number of replicas.
func (s *Store) Enroll(ctx context.Context, e *Enrollment) error {
	err := s.enrollInGroupCommit(ctx, e)
	if domain.ErrorCode(err) == domain.CodeConflict && e.Identity.MachineID != nil {
		// Backstop only: the machine lock already serializes re-enrollments of one machine, but
		// if another enrollment still won the unique index, plan again and supersede it.
		err = s.enrollInGroupCommit(ctx, e)
	}
	return err
}

// enrollInGroupCommit runs the enrollment in the next group commit, like heartbeats, together
// with the batch's other enrollments (enrollBatch). An invalid token writes nothing, so it is an
// answer for this caller, not a failed batch.
func (s *Store) enrollInGroupCommit(ctx context.Context, e *Enrollment) error {
	if err := s.inGroupCommit(ctx, &writeJob{key: "enroll", group: s.enr.group, item: e}); err != nil {
		return err
	}
	return e.answer
}

// errEnrollRace fails a batch whose enrollments lost their token's uses between the read and
// the take (another replica used them up, an admin revoked the token): the engine then runs
// each enrollment alone, which takes its use first.
var errEnrollRace = errors.New("store: an enrollment token changed during the batch")

// enrollBatch runs a batch's enrollments. Alone, an enrollment takes its token's use first
// (enrollOne). Together, the token is read, every enrollment is written with one statement per
// table, and the uses are taken last with one guarded UPDATE per token (uses + k <= max_uses):
// on PostgreSQL the token's row lock, which every enrollment of a rollout needs, is held only
// from that UPDATE to the commit. Enrollments whose token cannot cover the whole batch, or
// whose machine appears twice in it, are run alone after the others.
func (s *Store) enrollBatch(ctx context.Context, tx bun.Tx, ptx *preparedTx, items []any) error {
	es := make([]*Enrollment, len(items))
	for i, it := range items {
		es[i] = it.(*Enrollment)
		es[i].answer = nil
	}
	if len(es) == 1 {
		return s.enrollOne(ctx, tx, ptx, es[0])
	}
	type tokenGroup struct {
		grant     EnrollmentGrant
		remaining int
		now       int64
		jobs      []*Enrollment
	}
	var groups []*tokenGroup
	byHash := map[string]*tokenGroup{}
	for _, e := range es {
		g := byHash[e.TokenHash]
		if g == nil {
			g = &tokenGroup{}
			byHash[e.TokenHash] = g
			groups = append(groups, g)
		}
		g.jobs = append(g.jobs, e)
		g.now = max(g.now, Micros(e.Now))
	}
	var alone, together []*Enrollment
	grants := map[*Enrollment]*EnrollmentGrant{}
	var taken []*tokenGroup
	for _, g := range groups {
		err := ptx.QueryRowContext(ctx, s.enr.readToken, g.jobs[0].TokenHash, g.now).Scan(&g.grant.TokenID, &g.grant.TenantID,
			&g.grant.SiteID, &g.grant.CollectorID, &g.grant.CreatedBy, &g.remaining)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err != nil || g.remaining < len(g.jobs) {
			alone = append(alone, g.jobs...) // each takes its own use, or learns the token is invalid
			continue
		}
		taken = append(taken, g)
		for _, e := range g.jobs {
			grants[e] = &g.grant
			together = append(together, e)
		}
	}
	// One machine twice in the batch: the second must see the first's identity, so it runs
	// alone after it.
	seen := map[[2]string]bool{}
	planned := together[:0]
	for _, e := range together {
		if m := e.Identity.MachineID; m != nil {
			k := [2]string{grants[e].TenantID, *m}
			if seen[k] {
				alone = append(alone, e)
				delete(grants, e)
				continue
			}
			seen[k] = true
		}
		planned = append(planned, e)
	}
	if len(planned) > 0 {
		previous, err := s.machineIdentities(ctx, tx, ptx, planned, grants)
		if err != nil {
			return err
		}
		writes := make([]plannedEnrollment, len(planned))
		for i, e := range planned {
			p, err := e.Plan(grants[e], previous[e])
			if err != nil {
				return err
			}
			writes[i] = plannedEnrollment{e: e, grant: grants[e], plan: p}
		}
		if err := s.writeEnrollments(ctx, tx, ptx, writes); err != nil {
			return err
		}
		// The uses, last: one guarded UPDATE per token, in id order (the lock order).
		sort.Slice(taken, func(i, j int) bool { return taken[i].grant.TokenID < taken[j].grant.TokenID })
		for _, g := range taken {
			k := 0
			for _, e := range g.jobs {
				if grants[e] != nil {
					k++
				}
			}
			if k == 0 {
				continue
			}
			res, err := ptx.ExecContext(ctx, s.enr.takeUses, k, g.grant.TokenID, g.now, k)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n != 1 {
				return errEnrollRace
			}
		}
	}
	for _, e := range alone {
		if err := s.enrollOne(ctx, tx, ptx, e); err != nil {
			return err
		}
	}
	return nil
}

// enrollOne runs one enrollment: the guarded UPDATE ... RETURNING takes the use only while
// uses < max_uses, before anything else is written.
func (s *Store) enrollOne(ctx context.Context, tx bun.Tx, ptx *preparedTx, e *Enrollment) error {
	var g EnrollmentGrant
	err := ptx.QueryRowContext(ctx, s.enr.useToken, e.TokenHash, Micros(e.Now)).
		Scan(&g.TokenID, &g.TenantID, &g.SiteID, &g.CollectorID, &g.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		e.answer = ErrInvalidEnrollmentToken
		return nil
	}
	if err != nil {
		return err
	}
	one := []*Enrollment{e}
	previous, err := s.machineIdentities(ctx, tx, ptx, one, map[*Enrollment]*EnrollmentGrant{e: &g})
	if err != nil {
		return err
	}
	p, err := e.Plan(&g, previous[e])
	if err != nil {
		return err
	}
	return s.writeEnrollments(ctx, tx, ptx, []plannedEnrollment{{e: e, grant: &g, plan: p}})
}

type plannedEnrollment struct {
	e     *Enrollment
	grant *EnrollmentGrant
	plan  *EnrollmentPlan
}

// writeEnrollments writes planned enrollments whose uses are (or will be, in this transaction)
// taken: the supersessions first (the unique index allows one live identity per machine), then
// every principal, token, identity and event with one statement per table and chunk of rows.
func (s *Store) writeEnrollments(ctx context.Context, tx bun.Tx, ptx *preparedTx, ws []plannedEnrollment) error {
	st := s.enr
	for _, w := range ws {
		now := Micros(w.e.Now)
		for _, old := range w.plan.Supersede {
			if _, err := ptx.ExecContext(ctx, st.supersede, string(domain.StatusRevoked), now, w.plan.Reason,
				old.TenantID, old.AgentID, string(domain.StatusRevoked)); err != nil {
				return err
			}
			if err := releaseLiveness(ctx, tx, old.TenantID, old.AgentID); err != nil {
				return err
			}
		}
	}
	refs, err := s.identityRefs(ctx, ptx, len(ws))
	if err != nil {
		return err
	}
	for i, w := range ws {
		id := w.e.Identity
		id.Ref, id.AssetRef = refs[i], refs[i] // a new asset's ref is its first identity's
		if w.plan.AssetOf != nil {
			id.AssetRef = w.plan.AssetOf.AssetRef
		}
	}
	if err := insertRows(ctx, ptx, &st.insertPrincipals, st.rowsPerInsert, len(ws), func(i int, args []any) []any {
		e := ws[i].e
		sa := e.Principal
		return append(args, sa.ID, sa.TenantID, string(sa.Kind), sa.Name, string(sa.ActorKind), sa.ActorID, Micros(e.Now))
	}); err != nil {
		return err
	}
	if err := insertRows(ctx, ptx, &st.insertTokens, st.rowsPerInsert, len(ws), func(i int, args []any) []any {
		e := ws[i].e
		return append(args, e.Token.ID, e.Principal.TenantID, e.Principal.ID, e.Token.Hash, e.Token.Prefix,
			optMicros(e.Token.ExpiresAt), Micros(e.Now))
	}); err != nil {
		return err
	}
	if err := insertRows(ctx, ptx, &st.insertIdentities, st.rowsPerInsert, len(ws), func(i int, args []any) []any {
		e := ws[i].e
		id, now := e.Identity, Micros(e.Now)
		return append(args, id.AgentID, id.TenantID, id.SiteID, id.CollectorID, id.AssetID, id.MachineID, string(id.Status),
			id.Hostname, id.AgentVersion, id.PrincipalID, ws[i].grant.TokenID, Micros(id.EnrolledAt), now, id.Ref, id.AssetRef)
	}); err != nil {
		return err
	}
	var events []*domain.Event
	for _, w := range ws {
		events = append(events, w.plan.Events...)
	}
	if err := insertRows(ctx, ptx, &st.insertEvents, st.rowsPerInsert, len(events), func(i int, args []any) []any {
		ev := events[i]
		payload := string(ev.Payload)
		if payload == "" {
			payload = "{}"
		}
		return append(args, ev.ID, ev.TenantID, ev.Type, ev.AssetID, ev.AgentID, ev.ActorID, Micros(ev.OccurredAt), payload)
	}); err != nil {
		return err
	}
	for _, w := range ws {
		if c := w.plan.Certificate; c != nil {
			if err := insertCertificate(ctx, tx, c); err != nil {
				return err
			}
		}
		if w.plan.AssetOf == nil {
			continue // a new asset: it appears with the first heartbeat
		}
		// The machine's asset (if it has appeared) follows the new identity, even when the
		// previous identity had already been revoked by an admin.
		id := w.e.Identity
		if _, err := ptx.ExecContext(ctx, st.moveAsset, id.SiteID, id.AgentID, id.TenantID, id.AssetID); err != nil {
			return err
		}
		if _, err := ptx.ExecContext(ctx, st.moveLiveness, id.TenantID, id.SiteID, id.AssetRef); err != nil {
			return err
		}
	}
	return nil
}

// machineLockClass namespaces the per-machine advisory locks (the two-int4 key space, apart
// from the sweeper's single bigint key).
const machineLockClass = 0x6f6e6d63 // "onmc"

func machineLockKey(tenantID, machineID string) int32 {
	h := fnv.New32a()
	h.Write([]byte(tenantID))
	h.Write([]byte{0})
	h.Write([]byte(machineID))
	return int32(h.Sum32())
}

// machineIdentities returns, for each enrollment that names a machine, that machine's
// identities in the grant's tenant, newest first. On PostgreSQL it first takes the machines'
// advisory locks, in key order (no deadlock between batches), which serialize enrollments of
// one machine across committers and replicas until the transaction ends, so each sees the
// identity the previous one created; the rows it reads are locked too, so an admin's
// revocation cannot change them before the commit. SQLite needs neither: its single writer
// connection runs write transactions one at a time.
func (s *Store) machineIdentities(ctx context.Context, tx bun.Tx, ptx *preparedTx, es []*Enrollment,
	grants map[*Enrollment]*EnrollmentGrant) (map[*Enrollment][]*domain.AgentIdentity, error) {
	byTenant := map[string][]string{}
	var tenants []string
	var keys []int32
	for _, e := range es {
		if m := e.Identity.MachineID; m != nil {
			t := grants[e].TenantID
			if _, ok := byTenant[t]; !ok {
				tenants = append(tenants, t)
			}
			byTenant[t] = append(byTenant[t], *m)
			keys = append(keys, machineLockKey(t, *m))
		}
	}
	out := map[*Enrollment][]*domain.AgentIdentity{}
	if len(keys) == 0 {
		return out, nil
	}
	if s.Dialect == Postgres {
		slices.Sort(keys)
		if _, err := ptx.ExecContext(ctx, s.enr.lockMachines, machineLockClass, slices.Compact(keys)); err != nil {
			return nil, err
		}
	}
	found := map[[2]string][]*domain.AgentIdentity{}
	for _, t := range tenants {
		machines := byTenant[t]
		for len(machines) > 0 {
			n := min(len(machines), maxChunk)
			size := chunkAtLeast(n)
			args := make([]any, 0, 1+size)
			args = append(args, t)
			for i := range size {
				args = append(args, machines[min(i, n-1)]) // padded with the last: IN ignores repeats
			}
			rows, err := ptx.QueryContext(ctx, s.enr.previous[chunkIndex(size)], args...)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var id domain.AgentIdentity
				var machine, status string
				if err := rows.Scan(&id.AgentID, &id.TenantID, &id.AssetID, &id.AssetRef, &status, &machine); err != nil {
					rows.Close()
					return nil, err
				}
				id.Status, id.MachineID = domain.AgentStatus(status), &machine
				k := [2]string{id.TenantID, machine}
				found[k] = append(found[k], &id)
			}
			if err := rows.Close(); err != nil {
				return nil, err
			}
			if err := rows.Err(); err != nil {
				return nil, err
			}
			machines = machines[n:]
		}
	}
	for _, e := range es {
		if m := e.Identity.MachineID; m != nil {
			out[e] = found[[2]string{grants[e].TenantID, *m}]
		}
	}
	return out, nil
}

// identityRefs allocates n identity refs.
func (s *Store) identityRefs(ctx context.Context, ptx *preparedTx, n int) ([]int64, error) {
	refs := make([]int64, n)
	if s.Dialect != Postgres {
		// MAX + 1 under the database's single write lock.
		var base int64
		if err := ptx.QueryRowContext(ctx, s.enr.nextRefs).Scan(&base); err != nil {
			return nil, err
		}
		for i := range refs {
			refs[i] = base + int64(i)
		}
		return refs, nil
	}
	rows, err := ptx.QueryContext(ctx, s.enr.nextRefs, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	i := 0
	for rows.Next() && i < n {
		if err := rows.Scan(&refs[i]); err != nil {
			return nil, err
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if i != n {
		return nil, errors.New("store: too few identity refs")
	}
	return refs, nil
}

// Multi-row statements come in chunks of 1, 2, 4 ... maxChunk rows, prepared once: n rows are
// written with one statement per set bit of n (and one per maxChunk beyond it).
const (
	maxChunk = 64
	chunks   = 7 // 1 << (chunks-1) == maxChunk
)

func chunkIndex(size int) int { return bits.TrailingZeros(uint(size)) }

// chunkAtLeast is the smallest chunk size of at least n (n <= maxChunk).
func chunkAtLeast(n int) int { return 1 << bits.Len(uint(n-1)) }

// chunkAtMost is the largest chunk size of at most n (n >= 1).
func chunkAtMost(n, most int) int { return min(most, 1<<(bits.Len(uint(n))-1)) }

// insertRows writes n rows with the chunked statements stmts; row appends row i's values.
func insertRows(ctx context.Context, ptx *preparedTx, stmts *[chunks]string, most, n int, row func(i int, args []any) []any) error {
	var args []any
	for i := 0; i < n; {
		size := chunkAtMost(n-i, most)
		args = args[:0]
		for j := i; j < i+size; j++ {
			args = row(j, args)
		}
		if _, err := ptx.ExecContext(ctx, stmts[chunkIndex(size)], args...); err != nil {
			return err
		}
		i += size
	}
	return nil
}

// enrollStatements are the statements of an enrollment, prepared once like the heartbeat's
// (an enrollment storm goes through the same single writer).
type enrollStatements struct {
	useToken, readToken, takeUses, lockMachines, nextRefs string
	rowsPerInsert                                         int
	group                                                 *jobGroup // the batch's enrollments, run together
	supersede, moveAsset, moveLiveness                    string
	previous                                              [chunks]string
	insertPrincipals, insertTokens, insertIdentities      [chunks]string
	insertEvents                                          [chunks]string
}

func newEnrollStatements(d Dialect, rebind func(string) string) *enrollStatements {
	st := &enrollStatements{
		// Alone, the use is taken first and only while uses < max_uses: N concurrent
		// enrollments on a token of K uses take exactly min(N, K).
		useToken: rebind(`UPDATE enrollment_tokens SET uses = uses + 1
  WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ? AND uses < max_uses
  RETURNING id, tenant_id, site_id, collector_id, created_by`),
		// In a batch, the token is read first and its k uses taken last, only while uses + k
		// stays within max_uses.
		readToken: rebind(`SELECT id, tenant_id, site_id, collector_id, created_by, max_uses - uses FROM enrollment_tokens
  WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?`),
		takeUses: rebind(`UPDATE enrollment_tokens SET uses = uses + ?
  WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND uses + ? <= max_uses`),
		lockMachines: rebind(`SELECT pg_advisory_xact_lock(?, k) FROM unnest(CAST(? AS int4[])) AS k`),
		supersede: rebind(`UPDATE agent_identities SET status = ?, revoked_at = ?, revoked_reason = ?
  WHERE tenant_id = ? AND agent_id = ? AND status <> ?`),
		// A re-enrolled machine's asset (if it has appeared) follows the new identity and site.
		moveAsset:    rebind(`UPDATE assets SET site_id = ?, agent_id = ? WHERE tenant_id = ? AND id = ?`),
		moveLiveness: rebind(`UPDATE asset_liveness SET site_ref = (SELECT ref FROM sites WHERE tenant_id = ? AND id = ?) WHERE asset_ref = ?`),
	}
	// On PostgreSQL a batch's rows go in one statement per table (one round trip). On SQLite
	// one statement per row: a multi-row INSERT may fail halfway (its foreign keys and unique
	// indexes are checked row by row), so SQLite keeps a statement journal of every page it
	// touches, which cost more than the statements it saves (100,000 enrollments: 4,233/s with
	// 64-row statements, 4,544/s with one-row ones; BENCHMARKS.md).
	st.rowsPerInsert = 1
	if d == Postgres {
		st.rowsPerInsert = maxChunk
	}
	if d == Postgres {
		st.nextRefs = rebind(`SELECT nextval('agent_identities_ref_seq') FROM generate_series(1, ?)`)
	} else {
		st.nextRefs = `SELECT COALESCE(MAX(ref), 0) + 1 FROM agent_identities`
	}
	lock := ""
	if d == Postgres {
		lock = " FOR UPDATE"
	}
	for i := range chunks {
		n := 1 << i
		st.previous[i] = rebind(`SELECT agent_id, tenant_id, asset_id, asset_ref, status, machine_id FROM agent_identities
  WHERE tenant_id = ? AND machine_id IN (` + placeholders(n) + `) ORDER BY machine_id, enrolled_at DESC` + lock)
		st.insertPrincipals[i] = rebind(`INSERT INTO principals (id, tenant_id, kind, role, name, actor_kind, actor_id, created_at) VALUES ` +
			rowsOf(`(?, ?, ?, NULL, ?, ?, ?, ?)`, n))
		st.insertTokens[i] = rebind(`INSERT INTO api_tokens (id, tenant_id, principal_id, token_hash, prefix, expires_at, created_at) VALUES ` +
			rowsOf(placeholderRow(7), n))
		st.insertIdentities[i] = rebind(`INSERT INTO agent_identities (agent_id, tenant_id, site_id, collector_id, asset_id, machine_id,
  status, hostname, agent_version, principal_id, enrollment_token_id, enrolled_at, activity_at, ref, asset_ref) VALUES ` +
			rowsOf(placeholderRow(15), n))
		st.insertEvents[i] = rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload) VALUES ` +
			rowsOf(placeholderRow(8), n))
	}
	return st
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func placeholderRow(cols int) string { return "(" + placeholders(cols) + ")" }

func rowsOf(row string, n int) string { return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ") }

func (e *enrollStatements) all(d Dialect) []string {
	out := []string{e.useToken, e.readToken, e.takeUses, e.nextRefs, e.supersede, e.moveAsset, e.moveLiveness}
	if d == Postgres {
		out = append(out, e.lockMachines)
	}
	for i := range chunks {
		out = append(out, e.previous[i])
		if 1<<i <= e.rowsPerInsert {
			out = append(out, e.insertPrincipals[i], e.insertTokens[i], e.insertIdentities[i], e.insertEvents[i])
		}
	}
	return out
}
