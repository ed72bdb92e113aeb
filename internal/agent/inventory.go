package agent

import (
	"bufio"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// OS is the operating system part of the inventory.
type OS struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Kernel  string `json:"kernel,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

// Inventory is what an agent reports about its machine (CONTRACT §4 heartbeat body).
type Inventory struct {
	OS            *OS               `json:"os,omitempty"`
	IPAddresses   []string          `json:"ip_addresses,omitempty"`
	MACAddresses  []string          `json:"mac_addresses,omitempty"`
	CPUCount      int               `json:"cpu_count,omitempty"`
	MemoryBytes   float64           `json:"memory_bytes,omitempty"`
	UptimeSeconds float64           `json:"uptime_seconds,omitempty"`
	Facts         map[string]string `json:"facts,omitempty"`
}

// maxAddresses and maxAddressLength keep the inventory inside the server's limits.
const (
	maxAddresses     = 64
	maxAddressLength = 64
)

// Collect reads the host's inventory. Every source is optional: what cannot be read is
// left out rather than failing the heartbeat.
func Collect() Inventory {
	inv := Inventory{OS: collectOS(), CPUCount: runtime.NumCPU()}
	if kb, ok := meminfoKB("MemTotal"); ok {
		inv.MemoryBytes = float64(kb) * 1024
	}
	if up, ok := uptimeSeconds(); ok {
		inv.UptimeSeconds = up
	}
	inv.IPAddresses, inv.MACAddresses = addresses()
	return inv
}

// Hostname is the machine's host name ("unknown" if the OS will not say).
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

func collectOS() *OS {
	o := &OS{Name: runtime.GOOS, Arch: runtime.GOARCH}
	if rel := osRelease("/etc/os-release"); rel != nil {
		if v := rel["NAME"]; v != "" {
			o.Name = v
		}
		o.Version = rel["VERSION_ID"]
		if o.Version == "" {
			o.Version = rel["VERSION"]
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		o.Kernel = strings.TrimSpace(string(b))
	}
	return o
}

// osRelease parses an os-release(5) file: KEY=value lines, values optionally quoted.
func osRelease(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `'"`)
		}
		out[k] = v
	}
	return out
}

// meminfoKB returns a /proc/meminfo field in kB.
func meminfoKB(field string) (int64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n, err == nil && n > 0
	}
	return 0, false
}

func uptimeSeconds() (float64, bool) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	return v, err == nil && v >= 0
}

// addresses lists the addresses that identify this host on its networks.
func addresses() (ips, macs []string) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, nil
	}
	var list []netInterface
	for _, ifc := range ifaces {
		ni := netInterface{Name: ifc.Name, Flags: ifc.Flags, MAC: ifc.HardwareAddr}
		if addrs, err := ifc.Addrs(); err == nil {
			for _, a := range addrs {
				switch v := a.(type) {
				case *net.IPNet:
					ni.IPs = append(ni.IPs, v.IP)
				case *net.IPAddr:
					ni.IPs = append(ni.IPs, v.IP)
				}
			}
		}
		list = append(list, ni)
	}
	return pickAddresses(list)
}

// netInterface is what pickAddresses needs of an interface (tests build their own).
type netInterface struct {
	Name  string
	Flags net.Flags
	MAC   net.HardwareAddr
	IPs   []net.IP
}

// virtualPrefixes name the pseudo-interfaces of bridges, containers, VMs and overlays: their
// MACs are made up on this host and change, so they identify nothing.
var virtualPrefixes = []string{"veth", "docker", "br-", "virbr", "vnet", "cni", "flannel", "cali", "vxlan",
	"lxcbr", "lxdbr", "podman", "dummy", "kube-", "tun", "tap", "wg", "zt"}

// pickAddresses keeps the interfaces that are up, not loopback and not pseudo-interfaces, and
// of their addresses the routable ones: link-local (fe80::/10, 169.254/16) addresses are
// the same on every network and name nothing.
func pickAddresses(ifaces []netInterface) (ips, macs []string) {
	seen := map[string]bool{}
	add := func(list *[]string, s string) {
		if s == "" || seen[s] || len(s) > maxAddressLength || len(*list) >= maxAddresses {
			return
		}
		seen[s] = true
		*list = append(*list, s)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || isVirtual(ifc.Name) {
			continue
		}
		if len(ifc.MAC) > 0 && !allZero(ifc.MAC) {
			add(&macs, ifc.MAC.String())
		}
		for _, ip := range ifc.IPs {
			if ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsUnspecified() {
				add(&ips, ip.String())
			}
		}
	}
	return ips, macs
}

func isVirtual(name string) bool {
	for _, p := range virtualPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
