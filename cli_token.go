package main

import (
	"context"
	"fmt"
	"io"

	"github.com/oneprotect/telemetry/internal/app"
)

// tokenRevoke is `oneprotect token revoke --id ID`: an operator revokes any API token (a
// user's, a collector's or an agent's) by its id (apiTokens lists those of users). Every running replica
// refuses it within a second.
func tokenRevoke(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("token revoke")
	db := dbFlag(fs)
	id := fs.String("id", "", "the token's id, as apiTokens lists it (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *id == "" {
		return &usageError{"token revoke: --id is required"}
	}
	return withApp(ctx, *db, func(a *app.App) error {
		tok, err := a.Tenancy.RevokeAnyAPIToken(ctx, *id)
		if err != nil {
			return err
		}
		revokedAt := tok.RevokedAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		if *asJSON {
			return printJSON(stdout, map[string]string{"token_id": tok.ID, "revoked_at": revokedAt})
		}
		fmt.Fprintf(stdout, "token %s (%s...) revoked at %s\n", tok.ID, tok.Prefix, revokedAt)
		return nil
	})
}
