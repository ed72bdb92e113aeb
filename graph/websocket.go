package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// WebsocketLimits bound the subscription side of /query. Every one is a flag of
// `oneprotect serve`; zero or negative means the default.
type WebsocketLimits struct {
	// MaxConnections caps open websocket connections on this server, over all clients.
	MaxConnections int
	// MaxConnectionsPerAddr caps them per client IP address.
	MaxConnectionsPerAddr int
	// InitTimeout is how long a new connection may take to send connection_init.
	InitTimeout time.Duration
	// IdleTimeout closes a connection that holds no subscription and sends nothing this long.
	IdleTimeout time.Duration
	// PingInterval is how often the server pings; a client that does not pong within two
	// intervals is disconnected.
	PingInterval time.Duration
	// MaxSubscriptionsPerConnection caps the active subscriptions of one connection.
	MaxSubscriptionsPerConnection int
	// MaxSubscriptionsPerPrincipal caps one principal's active subscriptions over all its
	// connections to this server.
	MaxSubscriptionsPerPrincipal int
}

// DefaultWebsocketLimits are generous for dashboards (a browser tab holds one connection
// with a few subscriptions) and small next to a process's file descriptors and memory.
func DefaultWebsocketLimits() WebsocketLimits {
	return WebsocketLimits{
		MaxConnections:                4096,
		MaxConnectionsPerAddr:         64,
		InitTimeout:                   10 * time.Second,
		IdleTimeout:                   5 * time.Minute,
		PingInterval:                  30 * time.Second,
		MaxSubscriptionsPerConnection: 20,
		MaxSubscriptionsPerPrincipal:  100,
	}
}

// Validate refuses a limit that is not positive, naming its flag.
func (l WebsocketLimits) Validate() error {
	for _, c := range []struct {
		flag string
		ok   bool
	}{
		{"ws-max-connections", l.MaxConnections > 0},
		{"ws-max-connections-per-addr", l.MaxConnectionsPerAddr > 0},
		{"ws-init-timeout", l.InitTimeout > 0},
		{"ws-idle-timeout", l.IdleTimeout > 0},
		{"ws-ping-interval", l.PingInterval > 0},
		{"max-subscriptions-per-connection", l.MaxSubscriptionsPerConnection > 0},
		{"max-subscriptions-per-principal", l.MaxSubscriptionsPerPrincipal > 0},
	} {
		if !c.ok {
			return fmt.Errorf("--%s must be positive", c.flag)
		}
	}
	return nil
}

func (l WebsocketLimits) withDefaults() WebsocketLimits {
	d := DefaultWebsocketLimits()
	pick := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	pickD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&l.MaxConnections, d.MaxConnections)
	pick(&l.MaxConnectionsPerAddr, d.MaxConnectionsPerAddr)
	pick(&l.MaxSubscriptionsPerConnection, d.MaxSubscriptionsPerConnection)
	pick(&l.MaxSubscriptionsPerPrincipal, d.MaxSubscriptionsPerPrincipal)
	pickD(&l.InitTimeout, d.InitTimeout)
	pickD(&l.IdleTimeout, d.IdleTimeout)
	pickD(&l.PingInterval, d.PingInterval)
	return l
}

// graphql-transport-ws close codes.
const (
	closeBadRequest   = 4400 // a message that is not JSON, has no type, or an init payload that is not an object
	closeUnauthorized = 4401 // subscribe before connection_ack
	closeInitTimeout  = 4408
	closeTooManyInits = 4429
	closeNormal       = 1000
)

// errClosedByGuard ends gqlgen's read loop after the guard has closed the socket itself.
var errClosedByGuard = errors.New("websocket closed by the server")

// wsGate counts websocket connections and refuses those over the caps before the upgrade.
// It also owns the per-principal subscription counts, since a principal's subscriptions
// span its connections.
type wsGate struct {
	limits WebsocketLimits

	mu          sync.Mutex
	total       int
	perAddr     map[string]int
	perIdentity map[string]int // principal id -> active subscriptions
}

func newWSGate(l WebsocketLimits) *wsGate {
	return &wsGate{limits: l, perAddr: map[string]int{}, perIdentity: map[string]int{}}
}

type wsConnKey struct{}

// wsConn is the server's view of one websocket connection: what the guard and the
// subscription resolver share.
type wsConn struct {
	gate *wsGate

	mu       sync.Mutex
	subs     int       // active subscriptions
	lastSeen time.Time // last client message other than ping/pong
	idle     *time.Timer
	guard    *guardConn
}

func wsConnFrom(ctx context.Context) *wsConn {
	c, _ := ctx.Value(wsConnKey{}).(*wsConn)
	return c
}

// serve admits an upgrade request under the caps, then runs it.
func (g *wsGate) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	addr := r.RemoteAddr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	g.mu.Lock()
	if g.total >= g.limits.MaxConnections || g.perAddr[addr] >= g.limits.MaxConnectionsPerAddr {
		g.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		writeHTTPError(w, http.StatusTooManyRequests, "RATE_LIMITED", "too many websocket connections")
		return
	}
	g.total++
	g.perAddr[addr]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.total--
		if g.perAddr[addr]--; g.perAddr[addr] <= 0 {
			delete(g.perAddr, addr)
		}
		g.mu.Unlock()
	}()
	c := &wsConn{gate: g, lastSeen: time.Now()}
	next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), wsConnKey{}, c)))
	c.stopIdle()
}

// acquire takes a subscription slot on the connection and for the principal; release
// gives it back.
func (c *wsConn) acquire(principalID string) (release func(), ok bool) {
	g := c.gate
	g.mu.Lock()
	c.mu.Lock()
	if c.subs >= g.limits.MaxSubscriptionsPerConnection || g.perIdentity[principalID] >= g.limits.MaxSubscriptionsPerPrincipal {
		c.mu.Unlock()
		g.mu.Unlock()
		return nil, false
	}
	c.subs++
	g.perIdentity[principalID]++
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			if g.perIdentity[principalID]--; g.perIdentity[principalID] <= 0 {
				delete(g.perIdentity, principalID)
			}
			g.mu.Unlock()
			c.mu.Lock()
			c.subs--
			if c.subs == 0 {
				c.lastSeen = time.Now()
				c.armIdleLocked(g.limits.IdleTimeout)
			}
			c.mu.Unlock()
		})
	}, true
}

// startIdle begins the idle clock once the connection is acknowledged.
func (c *wsConn) startIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs == 0 {
		c.armIdleLocked(c.gate.limits.IdleTimeout)
	}
}

func (c *wsConn) armIdleLocked(d time.Duration) {
	if c.idle == nil {
		c.idle = time.AfterFunc(d, c.checkIdle)
		return
	}
	c.idle.Reset(d)
}

func (c *wsConn) checkIdle() {
	c.mu.Lock()
	if c.subs > 0 {
		c.mu.Unlock()
		return
	}
	if left := c.gate.limits.IdleTimeout - time.Since(c.lastSeen); left > 0 {
		c.armIdleLocked(left)
		c.mu.Unlock()
		return
	}
	g := c.guard
	c.mu.Unlock()
	if g != nil {
		g.closeWith(closeNormal, "idle timeout")
	}
}

func (c *wsConn) touch() {
	c.mu.Lock()
	c.lastSeen = time.Now()
	c.mu.Unlock()
}

func (c *wsConn) stopIdle() {
	c.mu.Lock()
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
}

// guardedWebsocket accepts connections with coder/websocket, as gqlgen does by default,
// and wraps each in a guardConn.
type guardedWebsocket struct {
	inner  transport.WebsocketImplementation
	limits WebsocketLimits
}

func (g guardedWebsocket) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := g.inner.Accept(w, r, o)
	if err != nil {
		return nil, err
	}
	gc := &guardConn{WebsocketConn: conn, conn: wsConnFrom(r.Context())}
	if gc.conn != nil {
		gc.conn.mu.Lock()
		gc.conn.guard = gc
		gc.conn.mu.Unlock()
	}
	gc.initTimer.Store(time.AfterFunc(g.limits.InitTimeout, func() {
		gc.closeWith(closeInitTimeout, "Connection initialisation timeout")
	}))
	return gc, nil
}

// guardConn checks every client message before gqlgen decodes it. gqlgen's transport
// returns without closing the socket when connection_init's payload is not an object,
// which leaked one descriptor per such connection; here a malformed message closes the
// socket with 4400, and the read error that follows makes gqlgen release the connection.
// It also enforces the init timeout (4408) and a single connection_init (4429).
type guardConn struct {
	transport.WebsocketConn
	conn      *wsConn // nil outside the gate (never in practice)
	initTimer atomic.Pointer[time.Timer]

	initSeen atomic.Bool
	closed   atomic.Bool
}

type clientMessage struct {
	Type    *string         `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func (g *guardConn) NextReader() (int, io.Reader, error) {
	mt, r, err := g.WebsocketConn.NextReader()
	if err != nil {
		return mt, r, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return mt, nil, err
	}
	var m clientMessage
	if json.Unmarshal(data, &m) != nil || m.Type == nil {
		return mt, nil, g.closeWith(closeBadRequest, "Invalid message")
	}
	switch *m.Type {
	case "connection_init":
		if g.initSeen.Swap(true) {
			return mt, nil, g.closeWith(closeTooManyInits, "Too many initialisation requests")
		}
		g.stopInitTimer()
		if p := bytes.TrimSpace(m.Payload); len(p) > 0 && p[0] != '{' && !bytes.Equal(p, []byte("null")) {
			return mt, nil, g.closeWith(closeBadRequest, "connection_init payload must be an object")
		}
		if g.conn != nil {
			g.conn.startIdle()
		}
	case "subscribe", "start":
		if !g.initSeen.Load() {
			return mt, nil, g.closeWith(closeUnauthorized, "Unauthorized")
		}
	}
	if g.conn != nil && *m.Type != "ping" && *m.Type != "pong" {
		g.conn.touch()
	}
	return mt, bytes.NewReader(data), nil
}

// closeWith starts the close handshake with code and returns errClosedByGuard. Later
// closes (gqlgen's own) are no-ops, so the client sees this code.
func (g *guardConn) closeWith(code int, reason string) error {
	if !g.closed.Swap(true) {
		g.stopInitTimer()
		_ = g.WebsocketConn.WriteClose(code, reason)
	}
	return errClosedByGuard
}

func (g *guardConn) WriteClose(code int, reason string) error {
	if g.closed.Swap(true) {
		return nil
	}
	g.stopInitTimer()
	return g.WebsocketConn.WriteClose(code, reason)
}

func (g *guardConn) Close() error {
	g.stopInitTimer()
	return g.WebsocketConn.Close()
}

func (g *guardConn) stopInitTimer() {
	if t := g.initTimer.Load(); t != nil {
		t.Stop()
	}
}

// The read limit and deadline (used by the ping/pong check) pass through to coder/websocket.

func (g *guardConn) SetReadLimit(limit int64) {
	if l, ok := g.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (g *guardConn) SetReadDeadline(t time.Time) error {
	if d, ok := g.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
