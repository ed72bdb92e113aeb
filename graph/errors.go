package graph

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/observe"
	"github.com/oneprotect/telemetry/internal/pacing"
)

// ErrorPresenter is the one place where errors become GraphQL errors: a domain error's code
// becomes extensions.code in upper case (UNKNOWN_AGENT, FORBIDDEN, ...) with the offending
// field in extensions.field; gqlgen's own errors keep their codes; anything else is internal
// and reaches the client only as "internal error" and the request id.
// With hide (--introspection=false), validation messages name nothing of the schema.
func ErrorPresenter(log *slog.Logger, hide bool) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gerr := graphql.DefaultErrorPresenter(ctx, err)
		if hide {
			gerr = hideSchema(ctx, gerr)
		}
		argField := argumentField(ctx, gerr.Path)
		var de *domain.Error
		if errors.As(err, &de) {
			gerr.Message = de.Message
			if gerr.Extensions == nil {
				gerr.Extensions = map[string]any{}
			}
			gerr.Extensions["code"] = strings.ToUpper(string(de.Code))
			if de.Field != "" {
				gerr.Extensions["field"] = de.Field
			} else if argField != "" {
				gerr.Extensions["field"] = argField
			}
			if de.RetryAfter > 0 { // RATE_LIMITED: what REST says in its Retry-After header
				gerr.Extensions["retryAfterSeconds"] = pacing.RetryAfterSeconds(de.RetryAfter)
			}
			return gerr
		}
		// A scalar of an argument that would not coerce (a Time that does not parse, a JSON
		// that is not an object): bad input, not an internal error.
		if _, ok := gerr.Extensions["code"]; !ok && argField != "" {
			return &gqlerror.Error{Message: argField + ": " + gerr.Message, Path: gerr.Path, Locations: gerr.Locations,
				Extensions: map[string]any{"code": strings.ToUpper(string(domain.CodeInvalidRequest)), "field": argField}}
		}
		if _, ok := gerr.Extensions["code"]; ok {
			return gerr // parse, validation and complexity errors from gqlgen
		}
		if strings.HasPrefix(gerr.Message, "json request body could not be decoded") {
			// gqlgen's message repeats the whole body and names Go types.
			return &gqlerror.Error{Message: `the body must be a JSON object: {"query": "...", "variables": {...}}`,
				Extensions: map[string]any{"code": strings.ToUpper(string(domain.CodeInvalidRequest))}}
		}
		var unwrapped *gqlerror.Error
		if errors.As(err, &unwrapped) && unwrapped.Err == nil && len(gerr.Path) == 0 {
			return gerr // a request-level error gqlgen wrote for the client
		}
		id := observe.RequestID(ctx)
		if errors.Is(err, context.Canceled) {
			// The client went away (a closed subscription, an aborted request): nobody reads
			// the answer and nothing failed.
			return &gqlerror.Error{Message: "request canceled", Path: gerr.Path,
				Extensions: map[string]any{"code": "CANCELED", "requestId": id}}
		}
		log.Error("graphql internal error", "request_id", id, "path", gerr.Path.String(), "err", err)
		return &gqlerror.Error{Message: "internal error (request " + id + ")", Path: gerr.Path,
			Extensions: map[string]any{"code": "INTERNAL", "requestId": id}}
	}
}

// argumentField names the argument value an error is about ("sentAt", "inventory.facts"),
// or "" for an error of the field itself. gqlgen reports argument errors on a path that
// continues past the field's own: the argument's name, then the input fields.
func argumentField(ctx context.Context, path ast.Path) string {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return ""
	}
	own := len(fc.Path())
	if len(path) <= own || !reflect.DeepEqual(path[:own], fc.Path()) {
		return ""
	}
	rest := path[own:]
	if len(rest) > 1 {
		rest = rest[1:] // the argument's own name, such as "input"
	}
	names := make([]string, 0, len(rest))
	for _, el := range rest {
		switch el := el.(type) {
		case ast.PathName:
			names = append(names, string(el))
		case ast.PathIndex:
			names = append(names, strconv.Itoa(int(el)))
		}
	}
	return strings.Join(names, ".")
}

// Recover turns a resolver panic into an internal error; the panic is logged, not shown.
func Recover(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		log.Error("graphql panic", "request_id", observe.RequestID(ctx), "panic", p)
		return errors.New("panic in resolver")
	}
}
