package telemetry

import (
	"reflect"
	"testing"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/flatcache"
	"github.com/oneprotect/telemetry/internal/flatcache/flatcachetest"
)

// The identity cache keeps every field of an identity: one the codec forgot would come back
// zero from every cached heartbeat's identity.
func TestIdentityCodecKeepsEveryField(t *testing.T) {
	full := flatcachetest.Filled[domain.AgentIdentity]()
	bare := full
	bare.CollectorID, bare.MachineID, bare.Hostname, bare.AgentVersion, bare.RevokedReason = nil, nil, nil, nil, nil
	bare.LastSeenAt, bare.RevokedAt, bare.ReactivatedAt = nil, nil, nil
	for _, id := range []domain.AgentIdentity{full, bare} {
		got, ok := identityCodec.Decode(flatcache.NewReader(identityCodec.Append(nil, &id)))
		if !ok || !reflect.DeepEqual(*got, id) {
			t.Fatalf("round trip:\n got %+v, %v\nwant %+v", got, ok, id)
		}
	}
}
