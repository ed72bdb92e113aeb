// Package scalars holds the GraphQL scalars the schema binds by hand.
package scalars

import (
	"encoding/json"
	"io"
	"math"
	"strconv"

	"github.com/99designs/gqlgen/graphql"

	"github.com/oneprotect/telemetry/internal/domain"
)

// MarshalInt32 writes a GraphQL Int.
func MarshalInt32(i int) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) { io.WriteString(w, strconv.Itoa(i)) })
}

// UnmarshalInt32 reads a GraphQL Int, which the specification limits to 32 bits: anything
// outside is INVALID_REQUEST, so a huge or overflowing list size never reaches a cost
// calculation or a query.
func UnmarshalInt32(v any) (int, error) {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return 0, outOfRange()
		}
		n = i
	case float64:
		if x != math.Trunc(x) || x < math.MinInt32 || x > math.MaxInt32 {
			return 0, outOfRange()
		}
		n = int64(x)
	default:
		return 0, &domain.Error{Code: domain.CodeInvalidRequest, Message: "an Int is expected"}
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, outOfRange()
	}
	return int(n), nil
}

func outOfRange() error {
	return &domain.Error{Code: domain.CodeInvalidRequest, Message: "an Int must fit in 32 bits"}
}
