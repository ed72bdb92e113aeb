package auth

import (
	"reflect"
	"testing"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/flatcache"
	"github.com/oneprotect/telemetry/internal/flatcache/flatcachetest"
)

// The token cache keeps every field of a principal: one the codec forgot would come back
// zero from every cached token.
func TestPrincipalCodecKeepsEveryField(t *testing.T) {
	for _, expires := range []bool{true, false} {
		p := flatcachetest.Filled[domain.Principal]()
		if !expires {
			p.ExpiresAt = nil
		}
		got, ok := principalCodec.Decode(flatcache.NewReader(principalCodec.Append(nil, &p)))
		if !ok || !reflect.DeepEqual(*got, p) {
			t.Fatalf("round trip:\n got %+v, %v\nwant %+v", got, ok, p)
		}
	}
}
