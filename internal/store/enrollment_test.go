package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The store side of enrollment in a batch: uses are taken once per token and never beyond
// max_uses, whatever the batch holds. The service's decisions are stood in for by a minimal
// plan (bind to the grant, supersede the machine's live identities, one event).
func TestEnrollmentBatch(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		s := env.App.Store
		ctx := context.Background()
		now := env.Clock.Now()
		tenant := &domain.Tenant{ID: ids.New(), Name: "Acme", Slug: "acme-" + testenv.Unique(), CreatedAt: now}
		if err := s.CreateTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		site := &domain.Site{ID: ids.New(), TenantID: tenant.ID, Name: "HQ", CreatedAt: now}
		if err := s.CreateSite(ctx, site); err != nil {
			t.Fatal(err)
		}
		mint := func(maxUses int) (id, hash string) {
			t.Helper()
			id, hash = ids.New(), "hash-"+ids.New()
			tok := &domain.EnrollmentToken{ID: id, TenantID: tenant.ID, SiteID: site.ID, Prefix: "opet_x", MaxUses: maxUses,
				ExpiresAt: now.Add(time.Hour), CreatedBy: ids.New(), CreatedAt: now}
			if err := s.CreateEnrollmentToken(ctx, tok, hash); err != nil {
				t.Fatal(err)
			}
			return id, hash
		}
		uses := func(tokenID string) int {
			t.Helper()
			tok, err := s.EnrollmentToken(ctx, tenant.ID, tokenID)
			if err != nil {
				t.Fatal(err)
			}
			return tok.Uses
		}
		enrolledWith := func(tokenID string) int {
			t.Helper()
			n, err := s.CountAgentIdentities(ctx, tenant.ID, store.IdentityFilter{EnrollmentTokenID: &tokenID})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		newEnrollment := func(hash, machine string) *store.Enrollment {
			id := &domain.AgentIdentity{AgentID: ids.New(), AssetID: ids.New(), Status: domain.StatusEnrolled, EnrolledAt: now}
			if machine != "" {
				id.MachineID = &machine
			}
			sa := &domain.Principal{ID: ids.New(), Name: "agent", Kind: domain.KindServiceAccount, ActorKind: domain.ActorAgent, ActorID: id.AgentID}
			id.PrincipalID = sa.ID
			e := &store.Enrollment{TokenHash: hash, Now: now, Identity: id, Principal: sa,
				Token: store.NewAPIToken{ID: ids.New(), Hash: "sa-" + ids.New(), Prefix: "opsa_x"}}
			newAsset := id.AssetID
			e.Plan = func(g *store.EnrollmentGrant, previous []*domain.AgentIdentity) (*store.EnrollmentPlan, error) {
				id.TenantID, id.SiteID, id.CollectorID, id.AssetID = g.TenantID, g.SiteID, g.CollectorID, newAsset
				sa.TenantID = g.TenantID
				p := &store.EnrollmentPlan{Reason: "superseded"}
				if len(previous) > 0 {
					p.AssetOf, id.AssetID = previous[0], previous[0].AssetID
				}
				for _, old := range previous {
					if old.Status != domain.StatusRevoked {
						p.Supersede = append(p.Supersede, old)
					}
				}
				p.Events = []*domain.Event{{ID: ids.At(now), TenantID: g.TenantID, Type: domain.EventAgentEnrolled,
					AssetID: &id.AssetID, AgentID: &id.AgentID, ActorID: &sa.ID, OccurredAt: now}}
				return p, nil
			}
			return e
		}
		batch := func(es ...*store.Enrollment) (ok, invalid int) {
			t.Helper()
			if err := store.EnrollTogether(ctx, s, es); err != nil {
				t.Fatalf("batch: %v", err)
			}
			for _, e := range es {
				switch err := store.Answer(e); {
				case err == nil:
					ok++
				case errors.Is(err, store.ErrInvalidEnrollmentToken):
					invalid++
				default:
					t.Fatalf("answer: %v", err)
				}
			}
			return ok, invalid
		}

		t.Run("a batch takes its token's uses at once", func(t *testing.T) {
			tokID, hash := mint(100)
			var es []*store.Enrollment
			for i := range 37 { // 32 + 4 + 1 rows: several statement sizes
				es = append(es, newEnrollment(hash, fmt.Sprintf("m-all-%d", i)))
			}
			if ok, invalid := batch(es...); ok != 37 || invalid != 0 {
				t.Fatalf("%d enrolled, %d refused", ok, invalid)
			}
			if u, n := uses(tokID), enrolledWith(tokID); u != 37 || n != 37 {
				t.Fatalf("uses %d, identities %d, want 37", u, n)
			}
			refs := map[int64]bool{}
			for _, e := range es {
				got, err := s.AgentIdentity(ctx, tenant.ID, e.Identity.AgentID)
				if err != nil || got.Status != domain.StatusEnrolled || got.SiteID != site.ID || got.AssetID != e.Identity.AssetID {
					t.Fatalf("identity %+v, %v", got, err)
				}
				refs[e.Identity.Ref] = true
			}
			if len(refs) != 37 {
				t.Fatalf("%d distinct refs for 37 identities", len(refs))
			}
		})

		t.Run("a batch bigger than the uses left gets exactly those", func(t *testing.T) {
			tokID, hash := mint(4)
			var es []*store.Enrollment
			for i := range 10 {
				es = append(es, newEnrollment(hash, fmt.Sprintf("m-few-%d", i)))
			}
			if ok, invalid := batch(es...); ok != 4 || invalid != 6 {
				t.Fatalf("%d enrolled, %d refused, want 4 and 6", ok, invalid)
			}
			if u, n := uses(tokID), enrolledWith(tokID); u != 4 || n != 4 {
				t.Fatalf("uses %d, identities %d, want 4", u, n)
			}
			if ok, invalid := batch(newEnrollment(hash, "m-few-late"), newEnrollment(hash, "m-few-later")); ok != 0 || invalid != 2 {
				t.Fatalf("used-up token: %d enrolled, %d refused", ok, invalid)
			}
		})

		t.Run("several tokens and an unknown one in one batch", func(t *testing.T) {
			aID, a := mint(3)
			bID, b := mint(50)
			es := []*store.Enrollment{newEnrollment(a, "m-mix-1"), newEnrollment(b, "m-mix-2"), newEnrollment("no-such-hash", "m-mix-3"),
				newEnrollment(a, "m-mix-4"), newEnrollment(b, ""), newEnrollment(a, "m-mix-6"), newEnrollment(a, "m-mix-7")}
			if ok, invalid := batch(es...); ok != 5 || invalid != 2 {
				t.Fatalf("%d enrolled, %d refused, want 5 and 2", ok, invalid)
			}
			if ua, ub := uses(aID), uses(bID); ua != 3 || ub != 2 {
				t.Fatalf("uses %d and %d, want 3 and 2", ua, ub)
			}
		})

		t.Run("one machine twice in a batch: the second supersedes the first", func(t *testing.T) {
			tokID, hash := mint(10)
			first, second := newEnrollment(hash, "m-twice"), newEnrollment(hash, "m-twice")
			if ok, _ := batch(first, second, newEnrollment(hash, "m-once")); ok != 3 {
				t.Fatalf("%d enrolled, want 3", ok)
			}
			old, err := s.AgentIdentity(ctx, tenant.ID, first.Identity.AgentID)
			if err != nil || old.Status != domain.StatusRevoked || old.RevokedReason == nil || *old.RevokedReason != "superseded" {
				t.Fatalf("first identity %+v, %v", old, err)
			}
			cur, err := s.AgentIdentity(ctx, tenant.ID, second.Identity.AgentID)
			if err != nil || cur.Status != domain.StatusEnrolled || cur.AssetID != old.AssetID {
				t.Fatalf("second identity %+v, %v (first's asset %s)", cur, err, old.AssetID)
			}
			if u := uses(tokID); u != 3 {
				t.Fatalf("uses %d, want 3", u)
			}
		})

		t.Run("a re-enrolled machine in a batch keeps its asset", func(t *testing.T) {
			_, hash := mint(10)
			before := newEnrollment(hash, "m-again")
			if ok, _ := batch(before); ok != 1 {
				t.Fatal("first enrollment refused")
			}
			again := newEnrollment(hash, "m-again")
			if ok, _ := batch(newEnrollment(hash, "m-other"), again); ok != 2 {
				t.Fatal("re-enrollment refused")
			}
			old, _ := s.AgentIdentity(ctx, tenant.ID, before.Identity.AgentID)
			if old.Status != domain.StatusRevoked || again.Identity.AssetID != before.Identity.AssetID ||
				again.Identity.AssetRef != before.Identity.AssetRef {
				t.Fatalf("old %+v, new %+v", old, again.Identity)
			}
		})

		if !testenv.IsPostgres(dsn) {
			return
		}
		t.Run("a token revoked during the batch fails it whole", func(t *testing.T) {
			tokID, hash := mint(10)
			es := []*store.Enrollment{newEnrollment(hash, "m-race-1"), newEnrollment(hash, "m-race-2")}
			plan := es[1].Plan
			es[1].Plan = func(g *store.EnrollmentGrant, previous []*domain.AgentIdentity) (*store.EnrollmentPlan, error) {
				// Another replica's admin, between the batch's read of the token and its use.
				if _, err := s.R.ExecContext(ctx, `UPDATE enrollment_tokens SET revoked_at = 1 WHERE id = ?`, tokID); err != nil {
					t.Error(err)
				}
				return plan(g, previous)
			}
			if err := store.EnrollTogether(ctx, s, es); err == nil {
				t.Fatal("the batch committed")
			}
			if u, n := uses(tokID), enrolledWith(tokID); u != 0 || n != 0 {
				t.Fatalf("uses %d, identities %d after a failed batch", u, n)
			}
			// Alone (as the engine runs a failed batch's writes again), each learns the token is revoked.
			if ok, invalid := batch(es[0]); ok != 0 || invalid != 1 {
				t.Fatalf("alone: %d enrolled, %d refused", ok, invalid)
			}
		})
	})
}
