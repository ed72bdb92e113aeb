package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitKeyModeAndNoOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now := time.Now()
	ca, err := Init(dir, "", now)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %04o", info.Mode().Perm())
	}
	if k, ok := ca.Cert.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() || !ca.Cert.IsCA {
		t.Fatal("want an ECDSA P-256 CA certificate")
	}
	if _, err := Init(dir, "", now); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second init must refuse to replace the CA: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable CA key must be refused: %v", err)
	}
}

func TestImport(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	orig, err := Init(src, "existing", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := Init(filepath.Join(t.TempDir(), "other"), "other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A certificate with another CA's key is refused.
	if _, err := Import(filepath.Join(t.TempDir(), "bad"), filepath.Join(src, CertFile), filepath.Join(other.writeKey(t), KeyFile)); err == nil {
		t.Fatal("a mismatched key was imported")
	}
	dst := filepath.Join(t.TempDir(), "dst")
	ca, err := Import(dst, filepath.Join(src, CertFile), filepath.Join(src, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if ca.Fingerprint() != orig.Fingerprint() {
		t.Fatal("the imported CA differs from the original")
	}
	// A leaf certificate is not a CA.
	_, csrPEM, _ := NewKeyAndCSR("x")
	csr, err := ParseCSR(string(csrPEM))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(csr, Subject{TenantID: "t", Kind: KindAgent, ID: "a"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafFile := filepath.Join(t.TempDir(), "leaf.crt")
	if err := os.WriteFile(leafFile, leaf.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(filepath.Join(t.TempDir(), "leaf"), leafFile, filepath.Join(src, KeyFile)); err == nil {
		t.Fatal("a leaf certificate was imported as a CA")
	}
}

// writeKey writes the CA key to a fresh directory (tests only: the key is not exported).
func (ca *CA) writeKey(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVerify(t *testing.T) {
	now := time.Now()
	ca, err := Init(filepath.Join(t.TempDir(), "ca"), "", now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, err := ParseCSR(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		t.Fatal(err)
	}
	subj := Subject{TenantID: "t1", Kind: KindCollector, ID: "c1"}
	iss, err := ca.Issue(csr, subj, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(iss.DER)
	id, err := ca.Verify([]*x509.Certificate{leaf}, now)
	if err != nil || id.Subject != subj || id.Serial != iss.Serial {
		t.Fatalf("verify: %+v %v", id, err)
	}
	if _, err := ca.Verify([]*x509.Certificate{leaf}, now.Add(2*time.Hour)); err == nil {
		t.Fatal("an expired certificate verified")
	}
	// A CA can never be used as a client certificate, even its own.
	if _, err := ca.Verify([]*x509.Certificate{ca.Cert}, now); err == nil {
		t.Fatal("the CA certificate verified as a client")
	}
}
