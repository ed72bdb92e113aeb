package graph

import (
	"context"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/oneprotect/telemetry/graph/generated"
	"github.com/oneprotect/telemetry/graph/model"
	"github.com/oneprotect/telemetry/internal/fleet"
)

// Cost model. Every field costs 1 plus its children; a list costs its children times its
// size, so nested lists multiply. Sums saturate at ComplexityLimit+1 and can never overflow
// into an accepted value. A page size over fleet.MaxFirst is costed as MaxFirst here and
// refused by the resolver with INVALID_REQUEST (CONTRACT §5); aliases, fragments and repeated
// fields all count, because gqlgen costs the merged selection field by field.
//
// Counts and aggregates are priced as the statements they run, not as one field: a
// totalCount is a COUNT over the tenant's index (countCost), fleetSummary a handful of
// GROUP BY aggregates (summaryCost). A totalCount is paid once per connection, not once per
// row of the page: gqlgen hands a connection's cost func only the sum of its children, so a
// totalCount reports itself in a unit of its own (countUnit, far above any other sum the
// shape limits allow) and the connection's cost func takes it back out before multiplying
// the rest by the page size. Should a count ever reach the top without passing through a
// connection's cost func, it is worth at least countUnit there and the operation is refused:
// the model fails closed.
const (
	ComplexityLimit = 25_000
	// unpagedList is the assumed size of lists without `first` (sites, collectors).
	unpagedList = 100
	// perParentQuery is the extra cost of a nested connection that runs one query per parent
	// (Asset.events), so a page of 500 assets cannot ask for 500 event listings.
	perParentQuery = 50
	// countCost is the price of one totalCount: 480 of them on a large fleet took seconds.
	countCost = 250
	// summaryCost is the price of fleetSummary's aggregates.
	summaryCost = 1_000
	// countUnit carries totalCounts up to their connection (see above).
	countUnit = 1 << 32
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

// listCost prices a connection (or a list) of size rows whose selection costs child: the
// counts it holds once each, the rest once per row.
func listCost(child int, size int64) int {
	counts, rest := int64(child)/countUnit, int64(child)%countUnit
	return saturate(1 + rest*size + counts*countCost)
}

func totalCount(int) int { return countUnit }

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
	c.AssetConnection.TotalCount = totalCount
	c.AgentIdentityConnection.TotalCount = totalCount
	c.EventConnection.TotalCount = totalCount
	c.EnrollmentTokenConnection.TotalCount = totalCount
	c.Query.FleetSummary = func(child int, _ *string) int { return saturate(summaryCost + int64(child)) }
	c.EnrollmentToken.Identities = func(child int, first *int, _ *string) int {
		// One query per token, like Asset.events.
		return saturate(perParentQuery + int64(listCost(child, pageSize(first))))
	}
	c.Query.Sites = func(child int) int { return listCost(child, unpagedList) }
	c.Query.Collectors = func(child int, _ *string) int { return listCost(child, unpagedList) }
	return c
}

// costLimit refuses operations over ComplexityLimit with COMPLEXITY_LIMIT_EXCEEDED before
// anything runs. It is gqlgen's fixed limit, except that it prices any totalCount that
// reached the top undecoded: that happens only when a connection's arguments do not coerce
// (its cost func is then skipped), and such a field is refused with INVALID_REQUEST when it
// runs, which must stay the answer.
type costLimit struct{ es graphql.ExecutableSchema }

func (*costLimit) ExtensionName() string { return "ComplexityLimit" }

func (c *costLimit) Validate(es graphql.ExecutableSchema) error {
	c.es = es
	return nil
}

func (c *costLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	op := oc.Doc.Operations.ForName(oc.OperationName)
	total := int64(complexity.Calculate(ctx, c.es, op, oc.Variables))
	n := saturate(total%countUnit + total/countUnit*countCost)
	if n > ComplexityLimit {
		err := gqlerror.Errorf("operation has complexity %d, which exceeds the limit of %d", n, ComplexityLimit)
		errcode.Set(err, "COMPLEXITY_LIMIT_EXCEEDED")
		return err
	}
	return nil
}
