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

// The event id layout: a UUIDv7 whose time is the event's, to the microsecond (milliseconds,
// then the microseconds within the millisecond in rand_a), so that events sort by when they
// happened on the service's clock. rand_b is random with its top bit clear for events made by
// At, and the heartbeat log's position with that bit set for ForLog, so that an event of the
// same microsecond sorts before the heartbeat that caused it, and the log's (received_at, seq)
// order is its ids' order.
const logFlag = 0x20 // in byte 8, below the variant bits

func timeID(us int64) uuid.UUID {
	var b uuid.UUID
	ms, sub := uint64(us/1000), uint64(us%1000)
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = 0x70 | byte(sub>>8)
	b[7] = byte(sub)
	return b
}

// At returns a new id for an event that happened at t.
func At(t time.Time) string {
	b := timeID(t.UnixMicro())
	if _, err := rand.Read(b[8:]); err != nil {
		panic(err)
	}
	b[8] = 0x80 | b[8]&0x1f
	return b.String()
}

// ForLog is the id of the heartbeat logged at position seq, received at receivedAt (unix
// microseconds).
func ForLog(receivedAt, seq int64) string {
	b := timeID(receivedAt)
	u := uint64(seq)
	b[8] = 0x80 | logFlag | byte(u>>56)&0x1f
	for i := 9; i < 16; i++ {
		b[i] = byte(u >> (8 * (15 - i)))
	}
	return b.String()
}

// LogBound turns an event id (a keyset cursor) into the log position where the heartbeats
// before it end: they are those with received_at < at OR (received_at = at AND seq < seq).
func LogBound(eventID string) (at, seq int64, ok bool) {
	b, err := uuid.Parse(eventID)
	if err != nil {
		return 0, 0, false
	}
	var ms uint64
	for i := 0; i < 6; i++ {
		ms = ms<<8 | uint64(b[i])
	}
	sub := uint64(b[6]&0x0f)<<8 | uint64(b[7])
	switch {
	case sub >= 1000: // an id of another layout: every heartbeat of its millisecond sorts before it
		return int64(ms)*1000 + 999, 1<<63 - 1, true
	case b[8]&logFlag == 0: // another event of this microsecond: its heartbeats sort after it
		return int64(ms)*1000 + int64(sub), 0, true
	}
	rb := uint64(b[8] & 0x1f)
	for i := 9; i < 16; i++ {
		rb = rb<<8 | uint64(b[i])
	}
	return int64(ms)*1000 + int64(sub), int64(rb), true
}

// Valid reports whether s looks like an id this service made (any UUID), so that malformed
// ids are refused before they reach a query.
func Valid(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}
