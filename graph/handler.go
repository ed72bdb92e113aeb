package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/oneprotect/telemetry/graph/generated"
	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
)

// Options configures the GraphQL server.
type Options struct {
	Introspection bool
	MaxBody       int64
	Authenticator *auth.Authenticator
	OnlineSince   func() int64
	Log           *slog.Logger
	// Sessions tracks websocket connections (shutdown, token revocation); nil makes one.
	Sessions *Sessions
	// Websocket bounds subscription connections; zero fields take their defaults.
	Websocket WebsocketLimits
}

// Server is /query's GraphQL server: gqlgen behind the websocket connection caps.
type Server struct {
	*handler.Server
	gate *wsGate
}

// ServeHTTP admits websocket upgrades under the connection caps; other requests go
// straight to gqlgen.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "" {
		s.gate.serve(w, r, s.Server)
		return
	}
	s.Server.ServeHTTP(w, r)
}

// parserTokenLimit bounds the lexer's work on one document (a 10,000-field query is
// refused before it is parsed in full).
const parserTokenLimit = 15_000

// NewServer builds the gqlgen server: explicit transports, a parsed-query cache, the cost
// limit, the token limit, and introspection only when enabled.
func NewServer(r *Resolver, o Options) *Server {
	limits := o.Websocket.withDefaults()
	gate := newWSGate(limits)
	r.gate = gate
	r.Live.SetLoader(liveLoader(r.Fleet.Store, o.OnlineSince))
	srv := handler.New(generated.NewExecutableSchema(generated.Config{
		Resolvers: r, Directives: Directives(), Complexity: Complexity(),
	}))
	if o.Sessions == nil {
		o.Sessions = NewSessions(o.Authenticator)
	}
	srv.AddTransport(o.Sessions.Transport(transport.Websocket{
		// The guard wraps every connection: it validates messages before gqlgen decodes
		// them and owns the init timeout (gqlgen's own is left off).
		Implementation:        guardedWebsocket{inner: transport.CoderWebsocketImplementation{}, limits: limits},
		KeepAlivePingInterval: limits.PingInterval, // graphql-ws (legacy) keep-alive
		PingPongInterval:      limits.PingInterval, // graphql-transport-ws ping, pong required
		PayloadReadLimit:      &o.MaxBody,
		InitFunc:              websocketInit(r, o),
	}))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetParserTokenLimit(parserTokenLimit)
	srv.Use(newShapeLimit())
	srv.Use(&costLimit{})
	srv.Use(subscriptionOps{})
	srv.Use(executionMarker{})
	if o.Introspection {
		srv.Use(extension.Introspection{})
	} else {
		srv.SetDisableSuggestion(true)
		srv.Use(introspectionOff{})
	}
	srv.SetErrorPresenter(ErrorPresenter(o.Log, !o.Introspection))
	srv.SetRecoverFunc(Recover(o.Log))
	return &Server{Server: srv, gate: gate}
}

// websocketInit authenticates a subscription connection from connection_init's
// {"Authorization": "Bearer ..."}; a missing or bad token closes the socket with 4403.
func websocketInit(r *Resolver, o Options) transport.WebsocketInitFunc {
	return func(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		refuse := func(err error) (context.Context, *transport.InitPayload, error) {
			ctx = transport.WithWebsocketCloseCode(ctx, 4403)
			ctx = transport.AppendCloseReason(ctx, "Forbidden")
			return ctx, nil, err
		}
		header := payload.Authorization()
		if header == "" {
			if v, ok := payload["authorization"].(string); ok {
				header = v
			}
		}
		token, ok := auth.ParseBearer(header)
		if !ok {
			return refuse(errors.New("a bearer token is required in connection_init"))
		}
		p, err := o.Authenticator.Authenticate(ctx, token)
		if err != nil {
			if domain.ErrorCode(err) == domain.CodeUnavailable {
				return ctx, nil, err
			}
			return refuse(errors.New("invalid token"))
		}
		ctx = o.Sessions.watch(ctx, token) // ends when the token is revoked, or at shutdown
		ctx = auth.WithPrincipal(ctx, p)
		// A connection lives long: its loaders batch but never cache, so every update is fresh.
		ctx = loaders.With(ctx, loaders.NewUncached(r.Fleet.Store, p.TenantID, o.OnlineSince))
		return ctx, nil, nil
	}
}
