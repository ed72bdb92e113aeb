package graph

import (
	"github.com/vikstrous/dataloadgen"

	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/graph/model"
	"github.com/oneprotect/telemetry/internal/store"
)

func conflictLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *store.Conflict] {
	return l.Conflict
}

// identityConflict is the GraphQL view of a clone conflict.
func identityConflict(c *store.Conflict) *model.IdentityConflict {
	if c == nil {
		return nil
	}
	out := &model.IdentityConflict{DetectedAt: store.FromMicros(c.DetectedAt), Fingerprints: []*model.MachineFingerprint{}}
	for _, f := range c.Fingerprints {
		macs := f.MACs
		if macs == nil {
			macs = []string{}
		}
		out.Fingerprints = append(out.Fingerprints, &model.MachineFingerprint{ID: f.ID, MachineID: f.MachineID,
			BootTime: store.FromMicros(f.BootTime), MacAddresses: macs, FirstSeenAt: store.FromMicros(f.FirstSeen),
			LastSeenAt: store.FromMicros(f.LastSeen)})
	}
	return out
}
