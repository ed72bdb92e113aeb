package domain

import "time"

// Certificate is a record of one certificate the agent CA signed: its serial and whom it
// names (an agent or a collector of a tenant). The certificate itself is not kept.
type Certificate struct {
	Serial      string
	TenantID    string
	SubjectKind ActorKind // ActorAgent or ActorCollector
	SubjectID   string
	Fingerprint string
	NotBefore   time.Time
	NotAfter    time.Time
	IssuedAt    time.Time
	Reason      string // "enrollment", "renewal" or "collector"
}

// Reasons a certificate was issued.
const (
	CertIssuedAtEnrollment = "enrollment"
	CertIssuedAtRenewal    = "renewal"
	CertIssuedToCollector  = "collector"
)
