package pacing

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// Jitter is the random part of each paced answer: up to this fraction of the interval,
// either way.
const Jitter = 0.10

// NextHeartbeat is the number of seconds an agent should wait before its next heartbeat.
//
// Random jitter alone spreads a fleet slowly: agents that all restarted in the same second
// would still be bunched after many intervals. So each agent also has a slot in the
// interval, fixed by a hash of its agent_id (slots are uniform across a fleet), and the
// answer points at the agent's next slot at least half an interval away, plus up to ±10% of
// the interval at random. The first answer after a burst therefore scatters the fleet over
// the whole interval at once; a steady agent arriving at its slot is told about one
// interval (±10% either side, never accumulating); every answer lies between 0.4 and 1.6
// intervals. Slots are counted from the Unix epoch, so every replica agrees on them.
func NextHeartbeat(agentID string, now time.Time, interval time.Duration) int {
	return nextHeartbeat(agentID, now, interval, rand.Float64()*2-1)
}

// nextHeartbeat takes the random draw u in [-1, 1) so tests can pin it.
func nextHeartbeat(agentID string, now time.Time, interval time.Duration, u float64) int {
	if interval < time.Second {
		return 1
	}
	period := int64(interval)
	slot := int64(Slot(agentID, interval))
	// The first slot instant (k*period + slot) at or after now + period/2.
	earliest := now.UnixNano() + period/2 - slot
	k := earliest / period
	if earliest%period != 0 && earliest > 0 {
		k++
	}
	target := k*period + slot
	wait := time.Duration(target-now.UnixNano()) + time.Duration(u*Jitter*float64(period))
	return max(1, int(math.Round(wait.Seconds())))
}

// Slot returns the agent's slot as an offset into the interval (benchmarks and tests).
func Slot(agentID string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(agentID))
	return time.Duration(h.Sum64() % uint64(interval))
}
