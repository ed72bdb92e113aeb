package rest

import (
	"net/http"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/enrollment"
)

// The certificate endpoints: renewal by the agent, a collector's own certificate, and the
// agent CA's certificate and CRL (public, like any CA's).
func (h *Handler) registerCertificates(mux *http.ServeMux, wrap func(route string, next http.Handler) http.Handler) {
	mux.Handle("POST /api/v1/agents/{agent_id}/certificate", wrap("agent_certificate", http.HandlerFunc(h.renewCertificate)))
	mux.Handle("POST /api/v1/collectors/{collector_id}/certificate", wrap("collector_certificate", http.HandlerFunc(h.collectorCertificate)))
	mux.Handle("GET /api/v1/agent-ca/certificate", wrap("agent_ca", http.HandlerFunc(h.caCertificate)))
	mux.Handle("GET /api/v1/agent-ca/crl", wrap("agent_ca_crl", http.HandlerFunc(h.caCRL)))
}

// certificateFields are added to an answer that carries a certificate.
type certificateFields struct {
	Certificate          string     `json:"certificate,omitempty"`
	CACertificate        string     `json:"ca_certificate,omitempty"`
	CertificateSerial    string     `json:"certificate_serial,omitempty"`
	CertificateExpiresAt *time.Time `json:"certificate_expires_at,omitempty"`
}

func certificateAnswer(c *enrollment.Issued) certificateFields {
	if c == nil {
		return certificateFields{}
	}
	exp := c.NotAfter.UTC()
	return certificateFields{Certificate: string(c.PEM), CACertificate: string(c.CACertificate),
		CertificateSerial: c.Serial, CertificateExpiresAt: &exp}
}

type csrBody struct {
	CSR *string `json:"csr"`
}

func (h *Handler) renewCertificate(w http.ResponseWriter, r *http.Request) {
	agentID := r.PathValue("agent_id")
	// Certificate and caller checks come before the body (the order of checks).
	if _, err := h.Enrollment.RenewalCaller(r.Context(), agentID); err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	var body csrBody
	if err := h.readJSON(w, r, &body); err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	out, err := h.Enrollment.RenewCertificate(r.Context(), agentID, body.CSR)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, certificateAnswer(out))
}

func (h *Handler) collectorCertificate(w http.ResponseWriter, r *http.Request) {
	collectorID := r.PathValue("collector_id")
	if _, err := h.Enrollment.CollectorCaller(r.Context(), collectorID); err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	var body csrBody
	if err := h.readJSON(w, r, &body); err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	out, err := h.Enrollment.CollectorCertificate(r.Context(), collectorID, body.CSR)
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, certificateAnswer(out))
}

func (h *Handler) caCertificate(w http.ResponseWriter, r *http.Request) {
	pem, err := h.Enrollment.CACertificate()
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(pem)
}

func (h *Handler) caCRL(w http.ResponseWriter, r *http.Request) {
	der, err := h.Enrollment.CRL(r.Context())
	if err != nil {
		writeError(w, r, h.Log, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "max-age=60")
	_, _ = w.Write(der)
}

// AgentCertificate wraps an agent endpoint (one with an {agent_id} in its path that only the
// agent itself may call, such as credential rotation) with the certificate stage of its
// checks, so that it runs before anything else the endpoint checks.
func (h *Handler) AgentCertificate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := auth.CheckAgentCertificate(r.Context(), r.PathValue("agent_id")); err != nil {
			writeError(w, r, h.Log, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
