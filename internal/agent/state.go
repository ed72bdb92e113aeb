package agent

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// State is what the agent keeps between runs: its identity and credential.
type State struct {
	Server      string    `json:"server"`
	MachineID   string    `json:"machine_id"`
	AgentID     string    `json:"agent_id"`
	AssetID     string    `json:"asset_id"`
	TenantID    string    `json:"tenant_id"`
	SiteID      string    `json:"site_id"`
	CollectorID *string   `json:"collector_id"`
	Token       string    `json:"token"`
	EnrolledAt  time.Time `json:"enrolled_at"`
	// HeartbeatIntervalSeconds is the interval the server advertised at enrollment.
	HeartbeatIntervalSeconds int `json:"heartbeat_interval_seconds"`
	// EnrollmentTokenSHA256 identifies the enrollment token this identity came from (never the
	// token itself): after a revoke, the same token given again must not undo the revoke,
	// while a new one re-enrolls.
	EnrollmentTokenSHA256 string `json:"enrollment_token_sha256,omitempty"`
	// TokenIssuedAt is when Token was received (enrollment or rotation); zero in state files
	// written before rotation existed, where EnrolledAt stands in for it.
	TokenIssuedAt time.Time `json:"token_issued_at,omitzero"`
	// PreviousToken is the token a rotation replaced, kept until a heartbeat has proved the
	// new one, so that a rotation interrupted anywhere leaves a token that works.
	PreviousToken string `json:"previous_token,omitempty"`
	// TokenExpiresAt is the expiry the server gave for Token (at rotation, or in the first
	// heartbeat answer after enrollment; TokenExpirySeen says whether it is known, nil being
	// "never"). An answer reporting an earlier expiry means the token was superseded or the
	// server lowered its maximum age: the agent rotates at once.
	TokenExpiresAt  *time.Time `json:"token_expires_at,omitempty"`
	TokenExpirySeen bool       `json:"token_expiry_seen,omitempty"`
}

// tokenDigest is the hex SHA-256 of an enrollment token.
func tokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// DefaultStateDir is /var/lib/oneprotect-agent for root, else oneprotect-agent in the user's
// state directory ($XDG_STATE_HOME, or ~/.local/state).
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/oneprotect-agent"
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "oneprotect-agent")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "oneprotect-agent")
	}
	return "oneprotect-agent"
}

// StateFile is the name of the state file inside the state directory.
const StateFile = "state.json"

// LoadState reads DIR/state.json; it returns nil, nil when there is none yet.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s is corrupt (delete it to enroll again): %w", filepath.Join(dir, StateFile), err)
	}
	if st.AgentID == "" || st.Token == "" {
		return nil, fmt.Errorf("%s holds no identity (delete it to enroll again)", filepath.Join(dir, StateFile))
	}
	return &st, nil
}

// SaveState writes DIR/state.json with mode 0600 (the token is a secret), atomically:
// a crash never leaves a half-written identity behind.
func SaveState(dir string, st *State) error {
	if err := ensureDir(dir); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, StateFile), append(data, '\n'))
}

// ensureDir creates dir with mode 0700, and tightens an existing one.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory is: without this a crash could bring
	// back the old file after the new token was already in use.
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MachineID returns /etc/machine-id when there is one, else a random id kept in
// DIR/machine-id so that it survives restarts.
func MachineID(dir string) (string, error) {
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	path := filepath.Join(dir, "machine-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	id := randomHex(16)
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}

// cloneMachineFile keeps the machine id a machine took when the server found it was a copy
// of another (identity_conflict): it outranks /etc/machine-id and --machine-id, which the copy
// shares with the original.
const cloneMachineFile = "clone-machine-id"

// cloneMachineID returns the machine id taken after an identity_conflict, or "".
func cloneMachineID(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, cloneMachineFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// newCloneMachineID gives this machine a machine id of its own, kept in the state directory.
func newCloneMachineID(dir string) error {
	if err := ensureDir(dir); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, cloneMachineFile), []byte(randomHex(16)+"\n"))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
