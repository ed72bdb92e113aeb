package graph

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/observe"
)

// ErrorPresenter is the one place where errors become GraphQL errors: a domain error's code
// becomes extensions.code in upper case (UNKNOWN_AGENT, FORBIDDEN, ...) with the offending
// field in extensions.field; gqlgen's own errors keep their codes; anything else is internal
// and reaches the client only as "internal error" and the request id.
func ErrorPresenter(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gerr := graphql.DefaultErrorPresenter(ctx, err)
		var de *domain.Error
		if errors.As(err, &de) {
			gerr.Message = de.Message
			if gerr.Extensions == nil {
				gerr.Extensions = map[string]any{}
			}
			gerr.Extensions["code"] = strings.ToUpper(string(de.Code))
			if de.Field != "" {
				gerr.Extensions["field"] = de.Field
			}
			return gerr
		}
		if _, ok := gerr.Extensions["code"]; ok {
			return gerr // parse, validation and complexity errors from gqlgen
		}
		var unwrapped *gqlerror.Error
		if errors.As(err, &unwrapped) && unwrapped.Err == nil && len(gerr.Path) == 0 {
			return gerr // a request-level error gqlgen wrote for the client
		}
		id := observe.RequestID(ctx)
		log.Error("graphql internal error", "request_id", id, "path", gerr.Path.String(), "err", err)
		return &gqlerror.Error{Message: "internal error (request " + id + ")", Path: gerr.Path,
			Extensions: map[string]any{"code": "INTERNAL", "requestId": id}}
	}
}

// Recover turns a resolver panic into an internal error; the panic is logged, not shown.
func Recover(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		log.Error("graphql panic", "request_id", observe.RequestID(ctx), "panic", p)
		return errors.New("panic in resolver")
	}
}
