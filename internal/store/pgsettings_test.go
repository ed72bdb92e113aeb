package store

import (
	"strings"
	"testing"
)

func TestSettingWarningsNameAutovacuum(t *testing.T) {
	if w := settingWarnings("on", "on"); len(w) != 0 {
		t.Fatalf("PostgreSQL's defaults warned: %v", w)
	}
	for _, c := range [][2]string{{"off", "on"}, {"on", "off"}} {
		w := settingWarnings(c[0], c[1])
		if len(w) != 1 || !strings.Contains(w[0], "autovacuum") {
			t.Fatalf("autovacuum=%s track_counts=%s: %v", c[0], c[1], w)
		}
	}
}
