// Package projection builds the asset read model from events. It is the only writer of the
// assets table: the live heartbeat path and `oneprotect projections rebuild` call the same
// functions with the same event payloads, so both give identical assets.
package projection

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Execer is what the projector needs from a transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Telemetry is the payload of asset.telemetry.received (and of asset.discovered): what the
// heartbeat said, with the identity's binding. Nil fields were absent and keep the asset's
// previous value; a present list or map replaces the previous one.
type Telemetry struct {
	SiteID      string  `json:"site_id"`
	HeartbeatID string  `json:"heartbeat_id,omitempty"`
	SentAt      *string `json:"sent_at,omitempty"`
	Hostname    string  `json:"hostname"`
	// HostnameReported says the heartbeat carried Hostname; otherwise Hostname is the
	// identity's, used only when the asset is created, and the asset keeps the one it has.
	HostnameReported bool                    `json:"hostname_reported,omitempty"`
	AgentVersion     *string                 `json:"agent_version,omitempty"`
	OS               *domain.OperatingSystem `json:"os,omitempty"`
	IPAddresses      *[]string               `json:"ip_addresses,omitempty"`
	MACAddresses     *[]string               `json:"mac_addresses,omitempty"`
	CPUCount         *int                    `json:"cpu_count,omitempty"`
	MemoryBytes      *float64                `json:"memory_bytes,omitempty"`
	UptimeSeconds    *float64                `json:"uptime_seconds,omitempty"`
	Facts            map[string]any          `json:"facts,omitempty"`
}

// Enrolled is the part of agent.enrolled's payload the projection uses: a re-enrolled machine
// keeps its asset, which follows the new identity's site.
type Enrolled struct {
	SiteID            string   `json:"site_id"`
	CollectorID       *string  `json:"collector_id"`
	MachineID         *string  `json:"machine_id,omitempty"`
	Hostname          *string  `json:"hostname,omitempty"`
	AgentVersion      *string  `json:"agent_version,omitempty"`
	EnrollmentTokenID string   `json:"enrollment_token_id"`
	Superseded        []string `json:"superseded,omitempty"`
}

// Statement texts use ? placeholders; Rebind adapts them to the driver.
const (
	// The asset upsert in three parts, so that the same text serves a VALUES insert (the
	// generic path) and an INSERT ... SELECT chained to another statement (PostgreSQL).
	assetInsert = `INSERT INTO assets (id, tenant_id, site_id, agent_id, hostname, os_name, os_version,
  os_kernel, os_arch, ip_addresses, mac_addresses, cpu_count, memory_bytes, uptime_seconds, facts,
  first_seen_at, last_seen_at, heartbeat_count)`
	assetValues = `?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, '[]'), COALESCE(?, '[]'), ?, ?, ?, COALESCE(?, '{}'), ?, ?, 1`
	// The conflict branch leaves site_id and agent_id alone: enrollment moves an asset to its new
	// identity (ApplyEnrolled), and an identity's heartbeat carries that same site and agent. Not
	// assigning them spares SQLite rewriting the site indexes on every heartbeat.
	assetConflict = `ON CONFLICT (id) DO UPDATE SET
  hostname = CASE WHEN ? THEN excluded.hostname ELSE assets.hostname END,
  os_name = CASE WHEN ? THEN excluded.os_name ELSE assets.os_name END,
  os_version = CASE WHEN ? THEN excluded.os_version ELSE assets.os_version END,
  os_kernel = CASE WHEN ? THEN excluded.os_kernel ELSE assets.os_kernel END,
  os_arch = CASE WHEN ? THEN excluded.os_arch ELSE assets.os_arch END,
  ip_addresses = COALESCE(?, assets.ip_addresses),
  mac_addresses = COALESCE(?, assets.mac_addresses),
  cpu_count = COALESCE(excluded.cpu_count, assets.cpu_count),
  memory_bytes = COALESCE(excluded.memory_bytes, assets.memory_bytes),
  uptime_seconds = COALESCE(excluded.uptime_seconds, assets.uptime_seconds),
  facts = COALESCE(?, assets.facts),
  last_seen_at = CASE WHEN excluded.last_seen_at > assets.last_seen_at THEN excluded.last_seen_at ELSE assets.last_seen_at END,
  heartbeat_count = assets.heartbeat_count + 1
WHERE assets.tenant_id = excluded.tenant_id
RETURNING heartbeat_count`
	upsertAsset = assetInsert + "\nVALUES (" + assetValues + ")\n" + assetConflict

	insertDiscovered = `INSERT INTO assets (id, tenant_id, site_id, agent_id, hostname, ip_addresses,
  mac_addresses, facts, first_seen_at, last_seen_at, heartbeat_count)
VALUES (?, ?, ?, ?, ?, '[]', '[]', '{}', ?, ?, 0)
ON CONFLICT (id) DO NOTHING`

	// updateTelemetry is the upsert's conflict branch as a plain UPDATE (see ApplyTelemetry).
	updateTelemetry = `UPDATE assets SET
  hostname = CASE WHEN ? THEN ? ELSE hostname END,
  os_name = CASE WHEN ? THEN ? ELSE os_name END,
  os_version = CASE WHEN ? THEN ? ELSE os_version END,
  os_kernel = CASE WHEN ? THEN ? ELSE os_kernel END,
  os_arch = CASE WHEN ? THEN ? ELSE os_arch END,
  ip_addresses = COALESCE(?, ip_addresses),
  mac_addresses = COALESCE(?, mac_addresses),
  cpu_count = COALESCE(?, cpu_count),
  memory_bytes = COALESCE(?, memory_bytes),
  uptime_seconds = COALESCE(?, uptime_seconds),
  facts = COALESCE(?, facts),
  last_seen_at = CASE WHEN ? > last_seen_at THEN ? ELSE last_seen_at END,
  heartbeat_count = heartbeat_count + 1
WHERE id = ? AND tenant_id = ?`

	moveAsset = `UPDATE assets SET site_id = ?, agent_id = ? WHERE tenant_id = ? AND id = ?`
)

// Projector applies events to the assets table with statements bound to one SQL dialect.
type Projector struct {
	upsertAsset, updateTelemetry, insertDiscovered, moveAsset string
}

// New returns a projector whose statements use rebind's placeholder style.
func New(rebind func(string) string) *Projector {
	return &Projector{upsertAsset: rebind(upsertAsset), updateTelemetry: rebind(updateTelemetry),
		insertDiscovered: rebind(insertDiscovered), moveAsset: rebind(moveAsset)}
}

// Statements lists the statement texts, for preparing them once.
func (p *Projector) Statements() []string {
	return []string{p.upsertAsset, p.updateTelemetry, p.insertDiscovered, p.moveAsset}
}

// ApplyTelemetry projects one accepted heartbeat and says whether it discovered the asset
// (created it). An asset that exists, the common case, takes a plain UPDATE by primary key with
// no RETURNING: SQLite runs that without the statement journal an upsert needs and without the
// temporary table RETURNING fills, each a large allocation and release per statement. The
// upsert creates the asset on its first heartbeat (and settles a race to create it).
func (p *Projector) ApplyTelemetry(ctx context.Context, tx Execer, tenantID, assetID, agentID string, occurredAt int64, t *Telemetry) (discovered bool, err error) {
	v, err := telemetryValuesOf(t)
	if err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, p.updateTelemetry, t.HostnameReported, t.Hostname, v.hasOS, v.osName, v.hasOS, v.osVersion,
		v.hasOS, v.osKernel, v.hasOS, v.osArch, v.ips, v.macs, t.CPUCount, t.MemoryBytes, t.UptimeSeconds, v.facts,
		occurredAt, occurredAt, assetID, tenantID)
	if err != nil {
		return false, fmt.Errorf("project telemetry: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return false, err
	}
	var count int64
	if err := tx.QueryRowContext(ctx, p.upsertAsset, v.upsertArgs(tenantID, assetID, agentID, occurredAt, t)...).Scan(&count); err != nil {
		return false, fmt.Errorf("project telemetry: %w", err)
	}
	return count == 1, nil
}

// TelemetryUpsertFrom is ApplyTelemetry's upsert as INSERT ... SELECT ... FROM source, with
// ? placeholders, for a caller that chains the projection to its own statement (PostgreSQL's
// data-modifying WITH): the asset is written only if source yields a row. Its arguments are
// TelemetryArgs.
func TelemetryUpsertFrom(source string) string {
	return assetInsert + "\nSELECT " + assetValues + " FROM " + source + "\n" + assetConflict
}

// TelemetryArgs are the arguments of the telemetry upsert, in placeholder order.
func TelemetryArgs(tenantID, assetID, agentID string, occurredAt int64, t *Telemetry) ([]any, error) {
	v, err := telemetryValuesOf(t)
	if err != nil {
		return nil, err
	}
	return v.upsertArgs(tenantID, assetID, agentID, occurredAt, t), nil
}

// telemetryValues are a Telemetry's values in the form the asset columns store them.
type telemetryValues struct {
	hasOS                               bool
	osName, osVersion, osKernel, osArch *string
	ips, macs, facts                    *string
}

func telemetryValuesOf(t *Telemetry) (telemetryValues, error) {
	v := telemetryValues{hasOS: t.OS != nil}
	if t.OS != nil {
		v.osName, v.osVersion, v.osKernel, v.osArch = t.OS.Name, t.OS.Version, t.OS.Kernel, t.OS.Arch
	}
	var err error
	if v.ips, err = optJSON(t.IPAddresses); err != nil {
		return v, err
	}
	if v.macs, err = optJSON(t.MACAddresses); err != nil {
		return v, err
	}
	if t.Facts != nil {
		b, err := json.Marshal(t.Facts)
		if err != nil {
			return v, err
		}
		s := string(b)
		v.facts = &s
	}
	return v, nil
}

func (v telemetryValues) upsertArgs(tenantID, assetID, agentID string, occurredAt int64, t *Telemetry) []any {
	return []any{assetID, tenantID, t.SiteID, agentID, t.Hostname, v.osName, v.osVersion, v.osKernel, v.osArch,
		v.ips, v.macs, t.CPUCount, t.MemoryBytes, t.UptimeSeconds, v.facts, occurredAt, occurredAt,
		t.HostnameReported, v.hasOS, v.hasOS, v.hasOS, v.hasOS, v.ips, v.macs, v.facts}
}

// ApplyDiscovered creates the asset if it does not exist yet (used by rebuild; on the live
// path ApplyTelemetry has already created it).
func (p *Projector) ApplyDiscovered(ctx context.Context, tx Execer, tenantID, assetID, agentID string, occurredAt int64, t *Telemetry) error {
	_, err := tx.ExecContext(ctx, p.insertDiscovered, assetID, tenantID, t.SiteID, agentID, t.Hostname, occurredAt, occurredAt)
	return err
}

// ApplyEnrolled moves an existing asset to the identity that now owns it.
func (p *Projector) ApplyEnrolled(ctx context.Context, tx Execer, tenantID, assetID, agentID string, e *Enrolled) error {
	_, err := tx.ExecContext(ctx, p.moveAsset, e.SiteID, agentID, tenantID, assetID)
	return err
}

func optJSON(v *[]string) (*string, error) {
	if v == nil {
		return nil, nil
	}
	list := *v
	if list == nil {
		list = []string{}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}
