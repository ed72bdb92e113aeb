package app_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oneprotect/telemetry/graph"
	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Hostile websocket clients (issue 11): malformed connection_init, connection floods,
// clients that never initialise, go idle or stop answering pings.

func wsLimits(f func(*graph.WebsocketLimits)) testenv.Option {
	return func(c *app.Config) { f(&c.Websocket) }
}

func wsURL(env *testenv.Env) string {
	return "ws" + strings.TrimPrefix(env.Server.URL, "http") + "/query"
}

// rawDial opens a graphql-transport-ws connection and sends nothing.
func rawDial(t *testing.T, env *testenv.Env) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, wsURL(env), &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err == nil {
		t.Cleanup(func() { conn.CloseNow() })
	}
	return conn, resp, err
}

// closeOf waits for the connection to end and returns its close status (-1: no close frame).
func closeOf(c *wsClient) websocket.StatusCode {
	for {
		_, err := c.read(generous)
		if err == nil {
			continue
		}
		return websocket.CloseStatus(err)
	}
}

// openFDs counts this process's open descriptors (the server runs in the test process).
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd here")
	}
	return len(entries)
}

func TestWebsocketMalformedInitClosesTheSocket(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		// The caps are raised here: this test is about sockets being freed, not refused.
		env := testenv.New(t, dsn, wsLimits(func(l *graph.WebsocketLimits) {
			l.MaxConnectionsPerAddr, l.MaxConnections = 1000, 1000
		}))
		tenant := env.Tenant("Ws")

		t.Run("each malformed init is closed with 4400", func(t *testing.T) {
			for name, payload := range map[string]any{
				"array":  []any{},
				"string": "x",
				"number": 5,
				"bool":   true,
			} {
				if got := closeOf(dialWS(t, env, payload)); got != 4400 {
					t.Errorf("payload %s: close status %d, want 4400", name, got)
				}
			}
			for name, msg := range map[string]string{
				"not JSON":          `<<<`,
				"no type":           `{"payload": {}}`,
				"not an object":     `[1, 2]`,
				"type not a string": `{"type": 7}`,
			} {
				conn, _, err := rawDial(t, env)
				if err != nil {
					t.Fatal(err)
				}
				c := &wsClient{t: t, conn: conn, msgs: make(chan wsMsg, 8)}
				go c.pump()
				ctx, cancel := context.WithTimeout(context.Background(), generous)
				_ = conn.Write(ctx, websocket.MessageText, []byte(msg))
				cancel()
				if got := closeOf(c); got != 4400 {
					t.Errorf("message %s: close status %d, want 4400", name, got)
				}
			}
		})

		t.Run("a second connection_init is 4429, subscribe before init 4401", func(t *testing.T) {
			c := connect(t, env, tenant.ViewerToken)
			c.send(map[string]any{"type": "connection_init", "payload": map[string]any{}})
			if got := closeOf(c); got != 4429 {
				t.Errorf("second init: close status %d, want 4429", got)
			}
			conn, _, err := rawDial(t, env)
			if err != nil {
				t.Fatal(err)
			}
			c = &wsClient{t: t, conn: conn, msgs: make(chan wsMsg, 8)}
			go c.pump()
			c.subscribe("1", nil)
			if got := closeOf(c); got != 4401 {
				t.Errorf("subscribe before init: close status %d, want 4401", got)
			}
		})

		t.Run("hundreds of them leave no socket behind", func(t *testing.T) {
			before := openFDs(t)
			const n = 300
			var wg sync.WaitGroup
			statuses := make(chan websocket.StatusCode, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					payload := any([]any{})
					if i%2 == 1 {
						payload = "x"
					}
					c := dialWS(t, env, payload)
					statuses <- closeOf(c)
					c.conn.CloseNow()
				}()
			}
			wg.Wait()
			close(statuses)
			for s := range statuses {
				if s != 4400 {
					t.Fatalf("close status %d, want 4400", s)
				}
			}
			// The server finishes each close handshake on its own schedule: wait for the
			// descriptors to come back rather than for a fixed time.
			deadline := time.Now().Add(generous)
			for openFDs(t) > before+20 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if got := openFDs(t); got > before+20 {
				t.Errorf("%d descriptors open after %d malformed connections, %d before", got, n, before)
			}
			if r := env.Do(http.MethodGet, "/healthz", "", nil); r.Status != http.StatusOK {
				t.Errorf("/healthz: %d", r.Status)
			}
			connect(t, env, tenant.ViewerToken) // and websockets still work
		})
	})
}

func TestWebsocketConnectionCaps(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, wsLimits(func(l *graph.WebsocketLimits) {
			l.MaxConnectionsPerAddr = 3
			l.MaxConnections = 5
		}))
		tenant := env.Tenant("Caps")
		refused := func() bool {
			t.Helper()
			conn, resp, err := rawDial(t, env)
			if err == nil {
				conn.CloseNow()
				return false
			}
			if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("refused dial: %v %+v", err, resp)
			}
			return true
		}
		var held []*wsClient
		for range 3 {
			held = append(held, connect(t, env, tenant.ViewerToken))
		}
		if !refused() {
			t.Fatal("a fourth connection from one address was accepted")
		}
		// Closing one frees its slot (once the server has seen the close).
		held[0].conn.Close(websocket.StatusNormalClosure, "")
		deadline := time.Now().Add(generous)
		for refused() {
			if time.Now().After(deadline) {
				t.Fatal("a closed connection's slot never came back")
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = held
	})
}

func TestWebsocketTimeouts(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, wsLimits(func(l *graph.WebsocketLimits) {
			l.InitTimeout = 200 * time.Millisecond
			l.IdleTimeout = 300 * time.Millisecond
			l.PingInterval = 100 * time.Millisecond
		}))
		tenant := env.Tenant("Timeouts")

		t.Run("no connection_init: 4408", func(t *testing.T) {
			conn, _, err := rawDial(t, env)
			if err != nil {
				t.Fatal(err)
			}
			c := &wsClient{t: t, conn: conn, msgs: make(chan wsMsg, 8)}
			go c.pump()
			if got := closeOf(c); got != 4408 {
				t.Errorf("close status %d, want 4408", got)
			}
		})

		t.Run("no subscription: closed when idle", func(t *testing.T) {
			c := connect(t, env, tenant.ViewerToken)
			if got := closeOf(c); got != websocket.StatusNormalClosure {
				t.Errorf("close status %d, want 1000", got)
			}
		})

		t.Run("no pong: disconnected", func(t *testing.T) {
			conn, _, err := rawDial(t, env)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), generous)
			defer cancel()
			_ = conn.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_init","payload":{"Authorization":"Bearer `+tenant.ViewerToken+`"}}`))
			_ = conn.Write(ctx, websocket.MessageText, []byte(`{"id":"1","type":"subscribe","payload":{"query":"subscription { assetUpdated { id } }"}}`))
			pings := 0
			for {
				_, data, err := conn.Read(ctx) // pings are read, never answered
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatal("a client that never pongs is still connected")
				}
				if err != nil {
					break
				}
				if strings.Contains(string(data), `"ping"`) {
					pings++
				}
			}
			if pings == 0 {
				t.Error("the server never pinged")
			}
		})
	})
}
