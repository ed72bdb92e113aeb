package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// `oneprotect token revoke --id` from another process than the server's: the running
// server refuses the token within a second.
func TestTokenRevokeCommand(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		tenant := env.Tenant("cli")
		viewer := env.MustGQL(tenant.ViewerToken, `{ viewer { id } }`, nil)["viewer"].(map[string]any)["id"]
		d := env.MustGQL(tenant.AdminToken, `mutation($p: ID!) { createApiToken(input: {principalId: $p}) { token apiToken { id } } }`,
			map[string]any{"p": viewer})["createApiToken"].(map[string]any)
		id, secret := d["apiToken"].(map[string]any)["id"].(string), d["token"].(string)
		accepted := func() bool {
			return env.GQL(secret, `{ viewer { id } }`, nil).Code() == ""
		}
		if !accepted() {
			t.Fatal("fresh token refused")
		}

		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"token", "revoke", "--db", dsn, "--id", id, "--json"}, &out, &errOut); code != 0 {
			t.Fatalf("token revoke: exit %d: %s", code, errOut.String())
		}
		revoked := time.Now()
		var res map[string]string
		if err := json.Unmarshal(out.Bytes(), &res); err != nil || res["token_id"] != id || res["revoked_at"] == "" {
			t.Fatalf("token revoke printed %q", out.String())
		}
		time.Sleep(time.Until(revoked.Add(900 * time.Millisecond)))
		if accepted() {
			t.Errorf("the server still accepts the token %v after `token revoke`", time.Since(revoked))
		}

		out.Reset()
		errOut.Reset()
		if code := run(context.Background(), []string{"token", "revoke", "--db", dsn, "--id", "00000000-0000-0000-0000-000000000000"}, &out, &errOut); code == 0 ||
			!strings.Contains(errOut.String(), "token not found") {
			t.Errorf("revoking an unknown token: exit %d, stderr %q", code, errOut.String())
		}
		if code := run(context.Background(), []string{"token", "revoke", "--db", dsn}, &out, &errOut); code != 2 {
			t.Errorf("token revoke without --id: exit %d, want 2", code)
		}
	})
}
