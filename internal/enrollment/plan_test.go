package enrollment

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

func TestPlanEnrollment(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	machine := "m-1"
	collector := "collector-1"
	grant := &store.EnrollmentGrant{TokenID: "token-1", TenantID: "tenant-1", SiteID: "site-1", CollectorID: &collector, CreatedBy: "admin-1"}
	fresh := func() (*domain.AgentIdentity, *domain.Principal) {
		return &domain.AgentIdentity{AgentID: "agent-new", AssetID: "asset-new", MachineID: &machine, Status: domain.StatusEnrolled, EnrolledAt: now},
			&domain.Principal{ID: "sa-new", Kind: domain.KindServiceAccount}
	}
	payload := func(t *testing.T, ev *domain.Event) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(ev.Payload, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("a new machine: a new asset, nothing superseded, the enrollment audited", func(t *testing.T) {
		id, sa := fresh()
		p := planEnrollment(id, sa, grant, nil, now, "asset-new")
		if id.TenantID != "tenant-1" || id.SiteID != "site-1" || id.CollectorID != &collector || sa.TenantID != "tenant-1" || id.AssetID != "asset-new" {
			t.Fatalf("identity %+v, principal %+v", id, sa)
		}
		if p.AssetOf != nil || len(p.Supersede) != 0 || len(p.Events) != 1 {
			t.Fatalf("plan %+v", p)
		}
		ev := p.Events[0]
		if ev.Type != domain.EventAgentEnrolled || ev.TenantID != "tenant-1" || *ev.AgentID != "agent-new" || *ev.AssetID != "asset-new" ||
			*ev.ActorID != "sa-new" || !ev.OccurredAt.Equal(now) {
			t.Fatalf("event %+v", ev)
		}
		m := payload(t, ev)
		if m["site_id"] != "site-1" || m["collector_id"] != collector || m["machine_id"] != machine || m["enrollment_token_id"] != "token-1" ||
			m["actor_id"] != "sa-new" || m["actor_kind"] != "SERVICE_ACCOUNT" || m["authorized_by"] != "admin-1" || m["superseded"] != nil {
			t.Fatalf("payload %v", m)
		}
	})

	t.Run("a machine seen before keeps its asset and supersedes its live identities only", func(t *testing.T) {
		previous := []*domain.AgentIdentity{
			{AgentID: "agent-2", TenantID: "tenant-1", AssetID: "asset-old", AssetRef: 7, Status: domain.StatusActive},
			{AgentID: "agent-1", TenantID: "tenant-1", AssetID: "asset-old", AssetRef: 7, Status: domain.StatusRevoked},
			{AgentID: "agent-0", TenantID: "tenant-1", AssetID: "asset-old", AssetRef: 7, Status: domain.StatusStale},
		}
		id, sa := fresh()
		for range 2 { // a batch run again plans the same
			p := planEnrollment(id, sa, grant, previous, now, "asset-new")
			if id.AssetID != "asset-old" || p.AssetOf != previous[0] || p.Reason != "superseded" {
				t.Fatalf("asset %s, plan %+v", id.AssetID, p)
			}
			if len(p.Supersede) != 2 || p.Supersede[0].AgentID != "agent-2" || p.Supersede[1].AgentID != "agent-0" || len(p.Events) != 3 {
				t.Fatalf("supersede %v, %d events", p.Supersede, len(p.Events))
			}
			for i, old := range []string{"agent-2", "agent-0"} {
				ev := p.Events[i]
				m := payload(t, ev)
				if ev.Type != domain.EventAgentRevoked || *ev.AgentID != old || *ev.AssetID != "asset-old" || *ev.ActorID != "sa-new" ||
					m["reason"] != "superseded" || m["superseded_by"] != "agent-new" || m["authorized_by"] != "admin-1" {
					t.Fatalf("revoked event %+v %v", ev, m)
				}
			}
			m := payload(t, p.Events[2])
			if s, _ := m["superseded"].([]any); len(s) != 2 || s[0] != "agent-2" || s[1] != "agent-0" || *p.Events[2].AssetID != "asset-old" {
				t.Fatalf("enrolled payload %v", m)
			}
		}
		// Planned again with no earlier identity, it is a new asset again.
		if planEnrollment(id, sa, grant, nil, now, "asset-new"); id.AssetID != "asset-new" {
			t.Fatalf("asset %s", id.AssetID)
		}
	})
}
