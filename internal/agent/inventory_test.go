package agent

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOSRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "os-release")
	content := "# comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	rel := osRelease(path)
	if rel["NAME"] != "Debian GNU/Linux" || rel["VERSION_ID"] != "12" || rel["ID"] != "debian" {
		t.Fatalf("parsed %v", rel)
	}
	if osRelease(filepath.Join(t.TempDir(), "missing")) != nil {
		t.Fatal("a missing file must give nil")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "5": 5 * time.Second, "-3": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("Retry-After %q = %v, want %v", in, got, want)
		}
	}
}

func TestCollect(t *testing.T) {
	inv := Collect()
	if inv.OS == nil || inv.OS.Name == "" || inv.OS.Arch == "" || inv.CPUCount <= 0 {
		t.Fatalf("inventory %+v", inv)
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil && inv.MemoryBytes <= 0 {
		t.Fatalf("memory %v though /proc/meminfo exists", inv.MemoryBytes)
	}
	for _, ip := range inv.IPAddresses {
		if ip == "127.0.0.1" || ip == "::1" {
			t.Fatalf("loopback address %s reported", ip)
		}
	}
}
