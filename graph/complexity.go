package graph

import (
	"github.com/oneprotect/telemetry/graph/generated"
	"github.com/oneprotect/telemetry/graph/model"
	"github.com/oneprotect/telemetry/internal/fleet"
)

// Cost model. Every field costs 1 plus its children; a list costs its children times its
// size, so nested lists multiply. Sums saturate at ComplexityLimit+1 and can never overflow
// into an accepted value. A page size over fleet.MaxFirst is costed as MaxFirst here and
// refused by the resolver with INVALID_REQUEST (CONTRACT §5); aliases, fragments and repeated
// fields all count, because gqlgen costs the merged selection field by field.
const (
	ComplexityLimit = 25_000
	// unpagedList is the assumed size of lists without `first` (sites, collectors).
	unpagedList = 100
	// perParentQuery is the extra cost of a nested connection that runs one query per parent
	// (Asset.events), so a page of 500 assets cannot ask for 500 event listings.
	perParentQuery = 50
)

func saturate(n int64) int {
	if n > ComplexityLimit+1 {
		return ComplexityLimit + 1
	}
	return int(n)
}

func pageSize(first *int) int64 {
	if first == nil {
		return 50
	}
	switch n := int64(*first); {
	case n < 1:
		return 1
	case n > fleet.MaxFirst:
		return fleet.MaxFirst
	default:
		return n
	}
}

func listCost(child int, size int64) int { return saturate(1 + int64(child)*size) }

// Complexity returns the per-field costs.
func Complexity() generated.ComplexityRoot {
	var c generated.ComplexityRoot
	c.Query.Assets = func(child int, first *int, _ *string, _ *model.AssetFilter) int {
		return listCost(child, pageSize(first))
	}
	c.Query.AgentIdentities = func(child int, first *int, _ *string, _ *model.AgentIdentityFilter) int {
		return listCost(child, pageSize(first))
	}
	c.Query.Events = func(child int, first *int, _ *string, _ *model.EventFilter) int {
		return listCost(child, pageSize(first))
	}
	c.Query.EnrollmentTokens = func(child int, first *int, _ *string) int {
		return listCost(child, pageSize(first))
	}
	c.Asset.Events = func(child int, first *int, _ *string) int {
		// Each asset's events are a query of their own, unlike batched fields.
		return saturate(perParentQuery + int64(listCost(child, pageSize(first))))
	}
	c.Query.APITokens = func(child int, _ *string, first *int) int {
		if first == nil {
			return listCost(child, 100)
		}
		return listCost(child, pageSize(first))
	}
	c.Query.Sites = func(child int) int { return listCost(child, unpagedList) }
	c.Query.Collectors = func(child int, _ *string) int { return listCost(child, unpagedList) }
	return c
}
