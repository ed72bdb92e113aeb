package clones

import (
	"fmt"
	"testing"
	"time"
)

// run feeds sightings (boot times in seconds, sent = received = i*20s) through Decide the
// way the store does, keeping what it says to keep.
func run(t *testing.T, mode Mode, boots ...int64) (history []Fingerprint, flagged bool, refusals int) {
	t.Helper()
	n := 0
	for i, b := range boots {
		at := int64(i+1) * 20 * time.Second.Microseconds()
		d := Decide(mode, history, flagged, Sighting{BootTime: b * time.Second.Microseconds(), Received: at, Sent: at}, nil,
			func() string { n++; return fmt.Sprint(n) })
		if d.Refuse {
			refusals++
			if !d.Detected {
				continue
			}
		}
		history = history[:0:0]
		for _, f := range d.History {
			if !f.Evicted() {
				history = append(history, f)
			}
		}
		flagged = flagged || d.Detected
	}
	return history, flagged, refusals
}

func TestDecide(t *testing.T) {
	if _, flagged, _ := run(t, Flag, 100, 100, 5000, 5000, 9000); flagged {
		t.Error("reboots are flagged")
	}
	if _, flagged, _ := run(t, Flag, 100, 5000, 100); !flagged {
		t.Error("A, B, A is not flagged")
	}
	if _, flagged, _ := run(t, Flag, 100, 110, 95, 120); flagged {
		t.Error("one boot within the tolerance is flagged")
	}
	if _, flagged, refusals := run(t, Refuse, 100, 5000, 100, 5000, 100, 5000); !flagged || refusals != 2 {
		t.Errorf("refuse: flagged %v, %d refusals, want the newer machine's 2 later beats", flagged, refusals)
	}
	var boots []int64
	for i := int64(0); i < 20; i++ {
		boots = append(boots, i*1000, i*1000)
	}
	if h, flagged, _ := run(t, Flag, boots...); flagged || len(h) > MaxNormal {
		t.Errorf("20 reboots: flagged %v, %d fingerprints kept (at most %d)", flagged, len(h), MaxNormal)
	}
	// Two clones left unresolved, rebooting again and again: the history stays bounded.
	boots = nil
	for i := int64(0); i < 30; i++ {
		a, b := 100000+i*1000, 500000+i*1000
		boots = append(boots, a, b, a, b)
	}
	if h, flagged, _ := run(t, Flag, boots...); !flagged || len(h) > 12 { // MaxNormal + MaxKept
		t.Errorf("rebooting clones: flagged %v, %d fingerprints kept", flagged, len(h))
	}
}

// A machine whose clock ran a year ahead for one heartbeat does not blind the check.
func TestDecideClockAhead(t *testing.T) {
	year := int64(365*24) * time.Hour.Microseconds()
	sec := time.Second.Microseconds()
	id := 0
	next := func() string { id++; return fmt.Sprint(id) }
	var h []Fingerprint
	flagged := false
	for i, b := range []int64{100, 5000, 100, 5000} {
		at := int64(i+1) * 20 * sec
		sent := at
		if i == 0 {
			sent += year
		}
		d := Decide(Flag, h, flagged, Sighting{BootTime: b * sec, Received: at, Sent: sent}, nil, next)
		h, flagged = d.History, flagged || d.Detected
	}
	if !flagged {
		t.Error("a clock a year ahead once hides the alternation")
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"flag": Flag, "refuse": Refuse} {
		if m, err := ParseMode(s); err != nil || m != want || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseMode("block"); err == nil {
		t.Error("block is accepted")
	}
}
