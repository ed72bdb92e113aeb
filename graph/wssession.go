package graph

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
)

// Close codes the server ends a subscription connection with.
const (
	CloseGoingAway = 1001 // the server is shutting down
	CloseForbidden = 4403 // the connection's token was revoked or has expired
)

// tokenCheckInterval is how often every open connection's token is checked again. A check
// is an in-memory cache hit unless a token was revoked since the last one (the
// authenticator re-reads only then), so a short interval is cheap.
const tokenCheckInterval = 250 * time.Millisecond

// Sessions tracks the open GraphQL websocket connections, so that the server can close them
// with a meaningful code: 1001 at shutdown, 4403 when the token that opened one is revoked
// or expires. gqlgen closes a connection whose context ends with 1000; the connection
// wrapper below replaces that code with the one chosen here.
type Sessions struct {
	auth *auth.Authenticator

	mu       sync.Mutex
	open     map[*session]struct{}
	closing  bool // CloseAll ran: new connections are turned away at once
	checking bool // the token checker goroutine is running
	wg       sync.WaitGroup
}

// NewSessions returns an empty registry that checks tokens with a.
func NewSessions(a *auth.Authenticator) *Sessions {
	return &Sessions{auth: a, open: map[*session]struct{}{}}
}

type session struct {
	mu     sync.Mutex
	conn   transport.WebsocketConn // set once accepted
	cancel context.CancelFunc      // set once connection_init succeeded
	token  string
	code   int // the close code to send instead of gqlgen's, once chosen
	reason string
}

type sessionKey struct{}

// Transport wraps the websocket transport so that its connections are registered here.
func (s *Sessions) Transport(ws transport.Websocket) graphql.Transport {
	inner := ws.Implementation
	if inner == nil {
		inner = transport.CoderWebsocketImplementation{}
	}
	ws.Implementation = closeCodeImplementation{inner: inner}
	return sessionTransport{ws: ws, sessions: s}
}

type sessionTransport struct {
	ws       transport.Websocket
	sessions *Sessions
}

func (t sessionTransport) Supports(r *http.Request) bool { return t.ws.Supports(r) }

func (t sessionTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	s := t.sessions
	sess := &session{}
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.open[sess] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closing {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.open, sess)
		s.mu.Unlock()
		s.wg.Done()
	}()
	t.ws.Do(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)), exec)
}

// watch is called from connection_init once token is accepted: it returns the connection's
// context, which ends when the connection must close.
func (s *Sessions) watch(ctx context.Context, token string) context.Context {
	sess, _ := ctx.Value(sessionKey{}).(*session)
	if sess == nil {
		return ctx // not a registered connection (a test calling the init function directly)
	}
	ctx, cancel := context.WithCancel(ctx)
	sess.mu.Lock()
	sess.cancel, sess.token = cancel, token
	closed := sess.code != 0
	sess.mu.Unlock()
	if closed {
		cancel()
		return ctx
	}
	s.mu.Lock()
	if !s.checking && !s.closing {
		s.checking = true
		s.wg.Add(1)
		go s.checkTokens()
	}
	s.mu.Unlock()
	return ctx
}

// close ends one connection with code. The first chosen code wins.
func (sess *session) close(code int, reason string) {
	sess.mu.Lock()
	if sess.code == 0 {
		sess.code, sess.reason = code, reason
	}
	cancel, conn := sess.cancel, sess.conn
	sess.mu.Unlock()
	switch {
	case cancel != nil:
		cancel() // gqlgen closes the connection, its subscriptions first
	case conn != nil:
		// Still before connection_init: nothing runs on it yet, close it directly.
		_ = conn.WriteClose(code, reason)
		_ = conn.Close()
	}
}

// checkTokens authenticates the token of every open connection again every
// tokenCheckInterval, and closes with 4403 those whose token is no longer valid. It runs
// while at least one authenticated connection is open.
func (s *Sessions) checkTokens() {
	defer s.wg.Done()
	tick := time.NewTicker(tokenCheckInterval)
	defer tick.Stop()
	for range tick.C {
		byToken := map[string][]*session{}
		s.mu.Lock()
		for sess := range s.open {
			sess.mu.Lock()
			if sess.token != "" && sess.code == 0 {
				byToken[sess.token] = append(byToken[sess.token], sess)
			}
			sess.mu.Unlock()
		}
		if len(byToken) == 0 || s.closing {
			s.checking = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for token, sessions := range byToken {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.auth.Authenticate(ctx, token)
			cancel()
			// A database failure is not the client's fault: keep the connection.
			if errors.Is(err, domain.ErrUnauthenticated) {
				for _, sess := range sessions {
					sess.close(CloseForbidden, "Forbidden")
				}
			}
		}
	}
}

// CloseAll closes every connection with 1001 and turns new ones away (graceful shutdown).
func (s *Sessions) CloseAll() {
	s.mu.Lock()
	s.closing = true
	open := make([]*session, 0, len(s.open))
	for sess := range s.open {
		open = append(open, sess)
	}
	s.mu.Unlock()
	for _, sess := range open {
		sess.close(CloseGoingAway, "server shutting down")
	}
}

// Wait blocks until every connection handler and the token checker have returned, or ctx
// ends.
func (s *Sessions) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeCodeImplementation accepts connections through inner and wraps them so that the
// close code chosen by Sessions is the one sent.
type closeCodeImplementation struct {
	inner transport.WebsocketImplementation
}

func (c closeCodeImplementation) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := c.inner.Accept(w, r, o)
	if err != nil {
		return nil, err
	}
	sess, _ := r.Context().Value(sessionKey{}).(*session)
	if sess == nil {
		return conn, nil
	}
	wrapped := &codeConn{WebsocketConn: conn, sess: sess}
	sess.mu.Lock()
	sess.conn = wrapped
	closed := sess.code != 0
	sess.mu.Unlock()
	if closed { // CloseAll ran while this one was being accepted
		_ = wrapped.WriteClose(CloseGoingAway, "server shutting down")
	}
	return wrapped, nil
}

type codeConn struct {
	transport.WebsocketConn
	sess *session
}

func (c *codeConn) WriteClose(code int, message string) error {
	c.sess.mu.Lock()
	if c.sess.code != 0 {
		code, message = c.sess.code, c.sess.reason
	}
	c.sess.mu.Unlock()
	return c.WebsocketConn.WriteClose(code, message)
}

// The transport uses these optional interfaces when the connection has them.

func (c *codeConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (c *codeConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
