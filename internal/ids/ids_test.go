package ids

import (
	"testing"
	"time"
)

// Ids of events and of logged heartbeats sort by time, an event before the heartbeats of its
// microsecond, and a log id's bound is exactly its position.
func TestEventIDsSortByTime(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 123456000, time.UTC)
	us := at.UnixMicro()
	ev, hb, next := At(at), ForLog(us, 41), ForLog(us+1, 7)
	if !(ev < hb && hb < next && ForLog(us, 40) < hb) {
		t.Fatalf("order: event %s, heartbeat %s, next %s", ev, hb, next)
	}
	if a, s, ok := LogBound(hb); !ok || a != us || s != 41 {
		t.Fatalf("bound of %s: %d %d %v", hb, a, s, ok)
	}
	if a, s, ok := LogBound(ev); !ok || a != us || s != 0 {
		t.Fatalf("bound of event %s: %d %d %v", ev, a, s, ok)
	}
	if !Valid(ev) || !Valid(hb) {
		t.Fatal("not valid ids")
	}
}
