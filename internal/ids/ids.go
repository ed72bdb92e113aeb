// Package ids makes identifiers: UUIDv7, so that ids sort by creation time and keyset
// pagination by id is stable while rows are added.
package ids

import "github.com/google/uuid"

// New returns a new time-ordered id.
func New() string { return uuid.Must(uuid.NewV7()).String() }

// Valid reports whether s looks like an id this service made (any UUID), so that malformed
// ids are refused before they reach a query.
func Valid(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}
