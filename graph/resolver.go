package graph

import (
	"github.com/oneprotect/telemetry/internal/enrollment"
	"github.com/oneprotect/telemetry/internal/fleet"
	"github.com/oneprotect/telemetry/internal/live"
	"github.com/oneprotect/telemetry/internal/telemetry"
	"github.com/oneprotect/telemetry/internal/tenancy"
)

// Resolver holds the services the resolvers adapt; server.go builds it once.
type Resolver struct {
	Tenancy    *tenancy.Service
	Enrollment *enrollment.Service
	Telemetry  *telemetry.Service
	Fleet      *fleet.Service
	Live       *live.Broker

	gate *wsGate // set by NewServer: connection and subscription counts
}
