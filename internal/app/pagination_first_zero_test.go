package app_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// TestPaginationFirstZero: a page without edges ends where it began. From the start,
// first: 0 answers hasNextPage (is there any row?) with a null endCursor, which continues
// from the start; after a cursor, its endCursor is that same position. Either way,
// following hasNextPage with endCursor reads every row once.
func TestPaginationFirstZero(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ten := env.Tenant("Zero Co")
		site := env.Site(ten, "HQ")
		tok := env.EnrollmentToken(ten, site, nil, 10)
		env.EnrollmentToken(ten, site, nil, 10)
		env.EnrollmentToken(ten, site, nil, 10)
		for i := range 3 {
			a := env.Enroll(tok, fmt.Sprintf("zero-%d", i), "")
			heartbeat(t, env, a, hb{"heartbeat_id": "first", "hostname": fmt.Sprintf("zero-%d", i)})
		}
		empty := env.Tenant("Empty Co") // no rows at all

		listings := []struct{ field, idField, token string }{
			{"assets", "id", ten.ViewerToken},
			{"agentIdentities", "agentId", ten.ViewerToken},
			{"events", "id", ten.ViewerToken},
			{"enrollmentTokens", "id", ten.AdminToken},
		}
		for _, l := range listings {
			t.Run(l.field, func(t *testing.T) {
				q := fmt.Sprintf(`query($first: Int, $after: String) { %s(first: $first, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { %s } } } }`, l.field, l.idField)
				read := func(tok string, first int, after *string) page {
					t.Helper()
					vars := map[string]any{"first": first}
					if after != nil {
						vars["after"] = *after
					}
					return readPage(t, env.MustGQL(tok, q, vars), l.field, l.idField)
				}
				cursor := func(p page) *string {
					if p.End == "" {
						return nil
					}
					return &p.End
				}
				all := read(l.token, 50, nil)
				if len(all.IDs) < 3 || all.HasNext {
					t.Fatalf("fixture: %+v", all)
				}

				// From the start: is there anything? endCursor null = from the start.
				zero := read(l.token, 0, nil)
				if len(zero.IDs) != 0 || !zero.HasNext || zero.End != "" {
					t.Fatalf("first: 0 from the start: %+v", zero)
				}
				if got := read(l.token, 50, cursor(zero)); !slices.Equal(got.IDs, all.IDs) {
					t.Fatalf("following first: 0's endCursor read %v, want %v", got.IDs, all.IDs)
				}

				// After the first row: rows remain, and endCursor continues after that row.
				one := read(l.token, 1, nil)
				zero = read(l.token, 0, cursor(one))
				if len(zero.IDs) != 0 || !zero.HasNext || zero.End == "" {
					t.Fatalf("first: 0 after a cursor: %+v", zero)
				}
				if got := read(l.token, 50, cursor(zero)); !slices.Equal(got.IDs, all.IDs[1:]) {
					t.Fatalf("following first: 0's endCursor read %v, want %v", got.IDs, all.IDs[1:])
				}

				// After the last row: nothing remains, and the position is kept.
				last := read(l.token, len(all.IDs), nil)
				zero = read(l.token, 0, cursor(last))
				if len(zero.IDs) != 0 || zero.HasNext || zero.End == "" {
					t.Fatalf("first: 0 after the last row: %+v", zero)
				}
				if got := read(l.token, 50, cursor(zero)); len(got.IDs) != 0 || got.HasNext {
					t.Fatalf("after the last row: %+v", got)
				}

				// A tenant without rows: no next page, nothing to continue from.
				tok := empty.ViewerToken
				if l.token == ten.AdminToken {
					tok = empty.AdminToken
				}
				if got := read(tok, 0, nil); len(got.IDs) != 0 || got.HasNext || got.End != "" {
					t.Fatalf("first: 0 with no rows: %+v", got)
				}
			})
		}
	})
}
