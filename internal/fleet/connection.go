package fleet

import (
	"context"

	"github.com/oneprotect/telemetry/internal/domain"
)

// PageInfo follows the Relay connection shape.
type PageInfo struct {
	HasNextPage bool
	EndCursor   *string
}

// connection is what every page shares: its PageInfo and a lazily run count, so totalCount
// costs a query only when a client asks for it.
type connection struct {
	PageInfo *PageInfo
	count    func(ctx context.Context) (int, error)
}

// TotalCount counts every row matching the page's filter (from a tenant-leading index).
func (c *connection) TotalCount(ctx context.Context) (int, error) { return c.count(ctx) }

type AssetEdge struct {
	Cursor string
	Node   *domain.Asset
}

type AssetConnection struct {
	connection
	Edges []AssetEdge
}

type AgentIdentityEdge struct {
	Cursor string
	Node   *domain.AgentIdentity
}

type AgentIdentityConnection struct {
	connection
	Edges []AgentIdentityEdge
}

type EventEdge struct {
	Cursor string
	Node   *domain.Event
}

type EventConnection struct {
	connection
	Edges []EventEdge
}

type EnrollmentTokenEdge struct {
	Cursor string
	Node   *domain.EnrollmentToken
}

type EnrollmentTokenConnection struct {
	connection
	Edges []EnrollmentTokenEdge
}

// page trims the extra row a store listing fetched, builds the edges with signed cursors,
// and says whether there is a next page. after is the key the page started after ("" for the
// first page).
//
// A page without edges (first: 0, or nothing left) ends where it started, so its endCursor
// is the cursor it was asked for: null from the start, else the same position (signed
// afresh). Following hasNextPage with endCursor therefore always continues where the page
// began, and first: 0 answers "is there anything from here on?" without skipping a row.
func page[T any, E any](rows []T, limit int, after string, key func(T) string, cursor func(string) string, edge func(string, T) E) ([]E, *PageInfo) {
	info := &PageInfo{}
	if len(rows) > limit {
		rows, info.HasNextPage = rows[:limit], true
	}
	edges := make([]E, len(rows))
	for i, r := range rows {
		c := cursor(key(r))
		edges[i] = edge(c, r)
		if i == len(rows)-1 {
			info.EndCursor = &c
		}
	}
	if len(rows) == 0 && after != "" {
		c := cursor(after)
		info.EndCursor = &c
	}
	return edges, info
}
