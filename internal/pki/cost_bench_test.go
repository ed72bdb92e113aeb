package pki

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"
)

// What a client certificate costs the listener (BENCHMARKS.md, "Heartbeats over mTLS"): a TLS
// handshake with and without one (both sides, over loopback TCP, as `serve` configures TLS), and
// the chain check of a presented certificate, which the service runs once per certificate (then
// it is cached by fingerprint).
//
//	go test -run '^$' -bench 'Handshake|VerifyClient' -benchtime 2s ./internal/pki/

func benchCA(b *testing.B) (*CA, tls.Certificate) {
	b.Helper()
	now := time.Now()
	ca, err := Init(filepath.Join(b.TempDir(), "ca"), "", now)
	if err != nil {
		b.Fatal(err)
	}
	keyPEM, csrPEM, err := NewKeyAndCSR("bench")
	if err != nil {
		b.Fatal(err)
	}
	csr, err := ParseCSR(string(csrPEM))
	if err != nil {
		b.Fatal(err)
	}
	iss, err := ca.Issue(csr, Subject{TenantID: "t1", Kind: KindAgent, ID: "a1"}, now, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	pair, err := tls.X509KeyPair(iss.PEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	return ca, pair
}

func BenchmarkHandshake(b *testing.B) {
	ca, agentCert := benchCA(b)
	serverCert, _, err := SelfSigned("127.0.0.1", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig([]tls.Certificate{serverCert}, ca.Pool()))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peerCerts int
		err       error
	}
	done := make(chan result)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			err = tc.Handshake()
			done <- result{len(tc.ConnectionState().PeerCertificates), err}
			tc.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(serverCert.Leaf)
	for _, bc := range []struct {
		name  string
		certs []tls.Certificate
	}{{"bearer-only", nil}, {"client-certificate", []tls.Certificate{agentCert}}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, Certificates: bc.certs, NextProtos: []string{"http/1.1"}}
			for b.Loop() {
				c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				r := <-done // the server's side of the handshake is done too
				if r.err != nil || r.peerCerts != len(bc.certs) {
					b.Fatalf("server handshake: %v, %d client certificates", r.err, r.peerCerts)
				}
				c.Close()
			}
		})
	}
}

func BenchmarkVerifyClientCertificate(b *testing.B) {
	ca, agentCert := benchCA(b)
	chain := []*x509.Certificate{agentCert.Leaf}
	now := time.Now()
	for b.Loop() {
		if _, err := ca.Verify(chain, now); err != nil {
			b.Fatal(err)
		}
	}
}
