package loadgen

import (
	"math"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 100_000; i++ { // 1µs .. 100ms, uniform
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 50}, {0.95, 95}, {0.99, 99}} {
		got := h.quantile(tc.q)
		if math.Abs(got-tc.want)/tc.want > 0.02 {
			t.Errorf("p%v = %.3fms, want %.0fms within 2%%", tc.q*100, got, tc.want)
		}
	}
	if h.max != 100_000 || h.quantile(1) > 100 {
		t.Errorf("max %d, p100 %.3f", h.max, h.quantile(1))
	}
	for v := uint64(0); v < 1<<40; v = v*3 + 1 {
		if b := bucketOf(v); b >= histBuckets || valueOf(b) < v-v/60 || valueOf(b) > v+v/60+1 {
			t.Fatalf("value %d: bucket %d holds ~%d", v, b, valueOf(b))
		}
	}
}
