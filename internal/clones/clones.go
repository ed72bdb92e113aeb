// Package clones decides when one agent credential is in use on two live machines. It is
// pure policy: the store loads an identity's few remembered machine fingerprints, asks Decide
// what a heartbeat means, and writes what it says.
//
// A fingerprint is the machine as one heartbeat shows it: the machine_id given at enrollment,
// the boot time (the heartbeat's receipt minus its uptime) and the set of MAC addresses. One
// machine shows one fingerprint per boot; a reboot or a re-image shows a new one, and the old
// one never comes back. Two machines sharing a credential (a copied disk, a VM template booted
// twice) show two fingerprints that alternate: A, then B, then A again. That, and only that,
// is a conflict.
package clones

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Mode is what the server does with a flagged identity's heartbeats (--on-identity-conflict).
type Mode int

const (
	// Flag accepts every machine's heartbeats and flags the identity for review.
	Flag Mode = iota
	// Refuse also answers the newer machine's heartbeats with identity_conflict.
	Refuse
)

// ParseMode parses the flag's value.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "flag":
		return Flag, nil
	case "refuse":
		return Refuse, nil
	}
	return Flag, fmt.Errorf("must be flag or refuse, not %q", s)
}

func (m Mode) String() string {
	if m == Refuse {
		return "refuse"
	}
	return "flag"
}

// State is a fingerprint's standing.
type State string

const (
	StateNormal   State = ""
	StateConflict State = "conflict" // one of the machines of an open conflict
	StateRefused  State = "refused"  // an admin kept another machine: refused for good
)

// Tolerance is how far two boot times may differ and still be one boot: the difference is
// transit and queueing, not a reboot (the same tolerance as the asset's boot time).
const Tolerance = 30 * time.Second

// MaxNormal is how many fingerprints outside a conflict an identity keeps: enough to see an
// alternation, few enough that a machine rebooting for years costs a handful of rows.
// MaxKept bounds the conflicting and the refused ones each, so that clones left unresolved
// and rebooting for months do not make every heartbeat of theirs read more rows.
const (
	MaxNormal = 4
	MaxKept   = 8
)

// Fingerprint is one remembered machine of an identity. Times are unix microseconds; Seen
// times are the server's receipts, Sent times the agent's sent_at (the receipt without one).
type Fingerprint struct {
	ID                    string
	MachineID             *string
	BootTime              int64
	MACs                  []string
	FirstSeen, LastSeen   int64
	FirstSent, LastSent   int64
	State                 State
	changed, isNew, evict bool
}

// Sighting is what one heartbeat shows.
type Sighting struct {
	MachineID *string
	BootTime  int64
	MACs      []string // sorted
	Received  int64
	Sent      int64
}

// Liveness is the asset's last report while this identity held it: the fast path updates it
// without consulting the fingerprints, so it tells the policy that the fingerprint booted at
// BootTime was seen up to LastSent (and LastSeen at the latest).
type Liveness struct {
	BootTime, LastSeen, LastSent int64
}

// Key is a fingerprint's hash without its boot time: machine id and MAC set.
func Key(machineID *string, macs []string) string {
	h := sha256.New()
	if machineID != nil {
		h.Write([]byte(*machineID))
	}
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(macs, ",")))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// SortedMACs returns the MAC set in one canonical form: lower case, sorted, no repeats.
func SortedMACs(macs []string) []string {
	out := make([]string, 0, len(macs))
	for _, m := range macs {
		out = append(out, strings.ToLower(m))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Decision is what a heartbeat means for the identity.
type Decision struct {
	// Refuse: answer identity_conflict and write no heartbeat.
	Refuse bool
	// Detected: this heartbeat shows the identity's first open conflict (flag it, and tell).
	Detected bool
	// History is the fingerprints to keep, with what changed (Changed, New, Evicted say it).
	History []Fingerprint
	// Conflicting is the open conflict's fingerprints, oldest first, once Detected.
	Conflicting []Fingerprint
}

// Changed, New and Evicted say what a fingerprint of Decision.History needs written.
func (f *Fingerprint) Changed() bool { return f.changed && !f.isNew && !f.evict }
func (f *Fingerprint) New() bool     { return f.isNew && !f.evict }
func (f *Fingerprint) Evicted() bool { return f.evict && !f.isNew }

func sameBoot(a, b int64) bool {
	d := a - b
	return d <= Tolerance.Microseconds() && d >= -Tolerance.Microseconds()
}

// match finds the fingerprint of a boot: the nearest boot time within the tolerance,
// preferring one with the same MAC set (a MAC set may change within a boot: a container's
// interface, a plugged adapter; a boot time does not).
func match(history []Fingerprint, boot int64, macs []string) int {
	best, bestD, bestMACs := -1, int64(0), false
	for i := range history {
		f := &history[i]
		if !sameBoot(f.BootTime, boot) {
			continue
		}
		d := max(f.BootTime-boot, boot-f.BootTime)
		same := slices.Equal(f.MACs, macs)
		if best < 0 || (same && !bestMACs) || (same == bestMACs && d < bestD) {
			best, bestD, bestMACs = i, d, same
		}
	}
	return best
}

// Decide says what sighting s means, given the identity's fingerprints (history), whether it
// is flagged, the policy and, when this identity holds the asset's liveness, what that shows.
// newID names a new fingerprint.
func Decide(mode Mode, history []Fingerprint, flagged bool, s Sighting, lv *Liveness, newID func() string) Decision {
	// A sent_at ahead of the server's clock is the agent's clock running fast: taken as is, a
	// far-future one would make every later heartbeat look like a late retry.
	s.Sent = min(s.Sent, s.Received)
	h := slices.Clone(history)
	for i := range h { // what an earlier decision said to write is written
		h[i].changed, h[i].isNew, h[i].evict = false, false, false
	}
	// The fast path's sightings, which the fingerprints have not seen: a machine that beats on
	// the fast path is alive all the same.
	if lv != nil {
		if i := match(h, lv.BootTime, nil); i >= 0 && lv.LastSent > h[i].LastSent {
			h[i].LastSent, h[i].LastSeen, h[i].changed = lv.LastSent, max(h[i].LastSeen, lv.LastSeen), true
		}
	}
	i := match(h, s.BootTime, s.MACs)
	if i >= 0 && h[i].State == StateRefused {
		return Decision{Refuse: true}
	}
	// A heartbeat sent before another fingerprint first reported is a late retry from an
	// earlier boot (or a queue replayed after a restart): it says nothing about which
	// machines are alive now, so it changes nothing.
	for j := range h {
		if j != i && h[j].State != StateRefused && s.Sent < h[j].FirstSent {
			return Decision{Refuse: refused(mode, flagged, h, i), History: h}
		}
	}
	if i < 0 {
		h = append(h, Fingerprint{ID: newID(), MachineID: s.MachineID, BootTime: s.BootTime, MACs: s.MACs,
			FirstSeen: s.Received, LastSeen: s.Received, FirstSent: s.Sent, LastSent: s.Sent, isNew: true})
		i = len(h) - 1
	} else {
		f := &h[i]
		if refused(mode, flagged, h, i) {
			return Decision{Refuse: true, History: h}
		}
		// Alternation: another fingerprint was seen after this one first was, and this one is
		// back. (A new fingerprint has no past to alternate with.)
		for j := range h {
			g := &h[j]
			if j == i || g.State == StateRefused || g.LastSeen <= f.FirstSeen {
				continue
			}
			for _, k := range []int{i, j} {
				if h[k].State != StateConflict {
					h[k].State, h[k].changed = StateConflict, true
				}
			}
		}
		f = &h[i]
		f.LastSeen, f.LastSent, f.MACs, f.changed = max(f.LastSeen, s.Received), max(f.LastSent, s.Sent), s.MACs, true
	}
	d := Decision{History: h}
	var conflicting []Fingerprint
	for _, f := range h {
		if f.State == StateConflict {
			conflicting = append(conflicting, f)
		}
	}
	if len(conflicting) >= 2 && !flagged {
		slices.SortFunc(conflicting, func(a, b Fingerprint) int { return compare(a.FirstSeen, b.FirstSeen) })
		d.Detected, d.Conflicting = true, conflicting
		// The machine that triggered it may itself be the newer one: under refuse it gets
		// the answer now, though the flag is written.
		d.Refuse = mode == Refuse && conflicting[0].ID != h[i].ID && h[i].State == StateConflict
	}
	evict(h)
	return d
}

// refused: under refuse, a flagged identity's conflicting fingerprints other than the oldest
// are refused.
func refused(mode Mode, flagged bool, h []Fingerprint, i int) bool {
	if mode != Refuse || !flagged || i < 0 || h[i].State != StateConflict {
		return false
	}
	for j := range h {
		if j != i && h[j].State == StateConflict && h[j].FirstSeen < h[i].FirstSeen {
			return true
		}
	}
	return false
}

// evict marks for deletion the least recently seen fingerprints beyond MaxNormal outside a
// conflict, and beyond MaxKept in a conflict and refused.
func evict(h []Fingerprint) {
	for st, keep := range map[State]int{StateNormal: MaxNormal, StateConflict: MaxKept, StateRefused: MaxKept} {
		var of []int
		for i := range h {
			if h[i].State == st {
				of = append(of, i)
			}
		}
		slices.SortFunc(of, func(a, b int) int { return compare(h[b].LastSeen, h[a].LastSeen) })
		for _, i := range of[min(len(of), keep):] {
			h[i].evict = true
		}
	}
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Set parses a flag value (flag.Value).
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err == nil {
		*m = v
	}
	return err
}
