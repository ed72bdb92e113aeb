package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"time"
)

// ServerConfig is the listener's TLS: 1.2 and 1.3 only; for 1.2 only ECDHE key exchange with
// AEAD ciphers (forward secrecy, no CBC, no RSA key transport); HTTP/2 and HTTP/1.1 by ALPN.
// With clientCAs, clients are asked for a certificate of that CA but not forced to send one:
// the service decides per endpoint (and answers with a JSON error rather than a failed
// handshake), so enrollment and the dashboards keep working without one.
func ServerConfig(certs []tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: certs,
		CipherSuites: []uint16{ // TLS 1.2 only; Go's TLS 1.3 suites are all modern and fixed
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		NextProtos:       []string{"h2", "http/1.1"},
	}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequestClientCert
		cfg.ClientCAs = clientCAs // tells clients which certificate to pick
	}
	return cfg
}

// SelfSigned makes a throwaway ECDSA P-256 server certificate for host (the listen address's
// host; empty, unspecified or loopback means this machine: localhost, the loopback addresses
// and its hostname), valid for a year. It lives only in memory: a restart makes a new one.
func SelfSigned(host string, now time.Time) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, err := NewSerial()
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "oneprotect self-signed", Organization: []string{"OneProtect Telemetry"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || (ip != nil && (ip.IsUnspecified() || ip.IsLoopback())):
		// This machine, by any of its local names.
		tmpl.DNSNames = []string{"localhost"}
		if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		if ip != nil && ip.IsLoopback() && !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	case ip != nil:
		tmpl.IPAddresses = []net.IP{ip}
	default:
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, Fingerprint(der), nil
}
