// Package ids makes identifiers: UUIDv7, so that ids sort by creation time and keyset
// pagination by id is stable while rows are added.
package ids

import (
	"crypto/rand"
	"time"

	"github.com/google/uuid"
)

// New returns a new time-ordered id.
func New() string { return uuid.Must(uuid.NewV7()).String() }

// At returns a new UUIDv7 for an event that happened at t: its time is t to the microsecond
// (milliseconds, then the microseconds within the millisecond in rand_a), so events sort by
// when they happened, on the service's clock. The heartbeat log's event ids use the same
// layout with their log position in rand_b and its top bit set, so that an event of the same
// microsecond sorts before the heartbeat that caused it.
func At(t time.Time) string {
	var b [16]byte
	if _, err := rand.Read(b[8:]); err != nil {
		panic(err)
	}
	us := t.UnixMicro()
	ms, sub := uint64(us/1000), uint64(us%1000)
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = 0x70 | byte(sub>>8)
	b[7] = byte(sub)
	b[8] = 0x80 | b[8]&0x1f
	return uuid.UUID(b).String()
}

// Valid reports whether s looks like an id this service made (any UUID), so that malformed
// ids are refused before they reach a query.
func Valid(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}
