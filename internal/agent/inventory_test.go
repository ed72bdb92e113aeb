package agent

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

func TestPickAddressesSkipsDownPseudoAndLinkLocal(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	up := net.FlagUp | net.FlagBroadcast
	ifaces := []netInterface{
		{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}},
		{Name: "eth0", Flags: up, MAC: mac("aa:bb:cc:dd:ee:01"),
			IPs: []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("fe80::a8bb:ccff:fedd:ee01"), net.ParseIP("2001:db8::5")}},
		{Name: "eth1", Flags: net.FlagBroadcast, MAC: mac("aa:bb:cc:dd:ee:02"), IPs: []net.IP{net.ParseIP("10.9.9.9")}}, // down
		{Name: "docker0", Flags: up, MAC: mac("02:42:ac:11:00:01"), IPs: []net.IP{net.ParseIP("172.17.0.1")}},
		{Name: "veth1a2b", Flags: up, MAC: mac("9e:00:00:00:00:01")},
		{Name: "wlan0", Flags: up, MAC: mac("00:00:00:00:00:00"), IPs: []net.IP{net.ParseIP("169.254.3.4")}},
	}
	ips, macs := pickAddresses(ifaces)
	if strings.Join(ips, ",") != "10.0.0.5,2001:db8::5" {
		t.Errorf("ips = %v", ips)
	}
	if strings.Join(macs, ",") != "aa:bb:cc:dd:ee:01" {
		t.Errorf("macs = %v", macs)
	}
}

func TestDefaultStateDir(t *testing.T) {
	if os.Geteuid() == 0 {
		if d := DefaultStateDir(); d != "/var/lib/oneprotect-agent" {
			t.Fatalf("as root: %q", d)
		}
		return
	}
	t.Setenv("XDG_STATE_HOME", "/tmp/xdg-state")
	if d := DefaultStateDir(); d != "/tmp/xdg-state/oneprotect-agent" {
		t.Fatalf("with XDG_STATE_HOME: %q", d)
	}
}
