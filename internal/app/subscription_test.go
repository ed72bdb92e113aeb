package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// Live updates over graphql-transport-ws with a real websocket client (issue 5).

// generous bounds how long a test waits for an update; the design delivers in milliseconds
// (a 100 ms NOTIFY batch between replicas), the margin is for loaded CI machines.
const generous = 10 * time.Second

type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsClient reads in a goroutine of its own: coder/websocket closes the connection when a
// Read's context ends, so a test that waits a while for an update must not time out a Read.
type wsClient struct {
	t       *testing.T
	conn    *websocket.Conn
	msgs    chan wsMsg
	readErr error // why msgs was closed
}

// dialWS opens a graphql-transport-ws connection and sends connection_init with payload.
func dialWS(t *testing.T, env *testenv.Env, payload any) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	url := "ws" + strings.TrimPrefix(env.Server.URL, "http") + "/query"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &wsClient{t: t, conn: conn, msgs: make(chan wsMsg, 64)}
	go c.pump()
	init := map[string]any{"type": "connection_init"}
	if payload != nil {
		init["payload"] = payload
	}
	c.send(init)
	return c
}

// connect dials and expects connection_ack.
func connect(t *testing.T, env *testenv.Env, token string) *wsClient {
	t.Helper()
	c := dialWS(t, env, map[string]any{"Authorization": "Bearer " + token})
	if m, err := c.read(generous); err != nil || m.Type != "connection_ack" {
		t.Fatalf("connection_init: %+v %v", m, err)
	}
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	data, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		c.t.Fatalf("websocket write: %v", err)
	}
}

// pump delivers every message other than a ping (which it answers) until the connection ends.
func (c *wsClient) pump() {
	defer close(c.msgs)
	for {
		_, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		var m wsMsg
		if err := json.Unmarshal(data, &m); err != nil {
			c.readErr = err
			return
		}
		if m.Type == "ping" {
			pong, _ := json.Marshal(map[string]any{"type": "pong"})
			_ = c.conn.Write(context.Background(), websocket.MessageText, pong)
			continue
		}
		c.msgs <- m
	}
}

// read returns the next message, or context.DeadlineExceeded if none came within wait (the
// connection stays open), or the error that ended the connection.
func (c *wsClient) read(wait time.Duration) (wsMsg, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			return wsMsg{}, c.readErr
		}
		return m, nil
	case <-timer.C:
		return wsMsg{}, context.DeadlineExceeded
	}
}

const assetUpdatedSub = `subscription($site: ID) { assetUpdated(siteId: $site) { id hostname online heartbeatCount
  site { id } agent { agentId status } } }`

func (c *wsClient) subscribe(id string, site *string) {
	vars := map[string]any{}
	if site != nil {
		vars["site"] = *site
	}
	c.send(map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": assetUpdatedSub, "variables": vars}})
}

// nextAsset waits for the next assetUpdated and returns the asset.
func (c *wsClient) nextAsset(wait time.Duration) (map[string]any, error) {
	m, err := c.read(wait)
	if err != nil {
		return nil, err
	}
	if m.Type != "next" {
		return nil, errors.New("unexpected message " + m.Type + ": " + string(m.Payload))
	}
	var p struct {
		Data   map[string]map[string]any `json:"data"`
		Errors []any                     `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 {
		return nil, errors.New("bad next: " + string(m.Payload))
	}
	return p.Data["assetUpdated"], nil
}

// prime sends heartbeats for a until the subscriber sees one: the server registers a
// subscription a moment after the subscribe message, with no acknowledgement to wait for.
func prime(t *testing.T, env *testenv.Env, c *wsClient, a *testenv.Agent) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for time.Now().Before(deadline) {
		heartbeat(t, env, a, nil)
		asset, err := c.nextAsset(time.Second)
		if err == nil && asset["id"] == a.AssetID {
			return
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("subscription: %v", err)
		}
	}
	t.Fatalf("the subscription never saw %s", a.AssetID)
}

// waitFor reads updates until want arrives; an update of an asset not in allowed (which
// includes updates published before the subscription existed, flushed by NOTIFY) fails.
func waitFor(t *testing.T, c *wsClient, want string, allowed ...string) {
	t.Helper()
	for {
		a, err := c.nextAsset(generous)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if a["id"] == want {
			return
		}
		if !slices.Contains(allowed, a["id"].(string)) {
			t.Fatalf("subscriber got foreign asset %v while waiting for %s", a, want)
		}
	}
}

func TestAssetUpdatedSubscription(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		m := newMixedFleet(t, env)

		t.Run("tenant, site and delivery", func(t *testing.T) {
			branch := connect(t, env, m.A.ViewerToken)
			branch.subscribe("1", &m.branch)
			prime(t, env, branch, m.edge)
			all := connect(t, env, m.A.ViewerToken)
			all.subscribe("1", nil)
			prime(t, env, all, m.web)
			other := connect(t, env, m.B.ViewerToken)
			other.subscribe("1", nil)
			prime(t, env, other, m.bAgt)

			start := time.Now()
			heartbeat(t, env, m.web, osBody("web-01", "1.4.3", "Debian GNU/Linux"))
			a, err := all.nextAsset(generous)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("update reached the subscriber %v after the heartbeat was accepted", time.Since(start))
			if a["id"] != m.web.AssetID || a["hostname"] != "web-01" || a["online"] != true ||
				a["site"].(map[string]any)["id"] != m.hq || a["agent"].(map[string]any)["status"] != "ACTIVE" {
				t.Errorf("update = %v", a)
			}
			// B's and the branch subscriber's next updates are their own: web's never reached them.
			heartbeat(t, env, m.bAgt, nil)
			if a, err := other.nextAsset(generous); err != nil || a["id"] != m.bAgt.AssetID {
				t.Errorf("tenant B got %v (%v), want only its own asset", a, err)
			}
			heartbeat(t, env, m.edge, nil)
			if a, err := branch.nextAsset(generous); err != nil || a["id"] != m.edge.AssetID {
				t.Errorf("branch subscriber got %v (%v), want only the branch asset", a, err)
			}
			if a, err := all.nextAsset(generous); err != nil || a["id"] != m.edge.AssetID {
				t.Errorf("all-sites subscriber got %v (%v)", a, err)
			}
		})

		t.Run("a viewer may subscribe, a service account may not", func(t *testing.T) {
			c := connect(t, env, m.web.Token)
			c.subscribe("1", nil)
			msg, err := c.read(generous)
			if err != nil || (msg.Type != "error" && msg.Type != "next") || !strings.Contains(string(msg.Payload), "FORBIDDEN") ||
				strings.Contains(string(msg.Payload), `"assetUpdated":{`) {
				t.Errorf("service account subscription: %s %s %v", msg.Type, msg.Payload, err)
			}
		})

		t.Run("missing or bad token closes with 4403", func(t *testing.T) {
			for name, payload := range map[string]any{
				"no payload":    nil,
				"no token":      map[string]any{},
				"bad token":     map[string]any{"Authorization": "Bearer opu_not-a-real-token"},
				"not a bearer":  map[string]any{"Authorization": m.A.ViewerToken},
				"enrollment tk": map[string]any{"Authorization": "Bearer " + env.EnrollmentToken(m.A, m.hq, nil, 1)},
			} {
				c := dialWS(t, env, payload)
				_, err := c.read(generous)
				if got := websocket.CloseStatus(err); got != 4403 {
					t.Errorf("%s: close status %d (%v), want 4403", name, got, err)
				}
			}
		})

		if !testenv.IsPostgres(dsn) {
			return
		}
		t.Run("a heartbeat on one replica reaches a subscriber on another", func(t *testing.T) {
			replica := testenv.New(t, dsn)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			env.App.Run(ctx)
			replica.App.Run(ctx)
			sub := connect(t, replica, m.A.ViewerToken)
			sub.subscribe("1", &m.hq)
			prime(t, env, sub, m.web) // heartbeats go to env, the subscriber is on replica
			start := time.Now()
			heartbeat(t, env, m.web, nil)
			waitFor(t, sub, m.web.AssetID, m.web.AssetID, m.db.AssetID, m.idle.AssetID)
			t.Logf("cross-replica update after %v", time.Since(start))
			// Tenant B's subscriber on the replica only ever sees B.
			other := connect(t, replica, m.B.ViewerToken)
			other.subscribe("1", nil)
			prime(t, env, other, m.bAgt)
			heartbeat(t, env, m.web, nil)
			heartbeat(t, env, m.edge, nil)
			heartbeat(t, env, m.bAgt, nil)
			waitFor(t, other, m.bAgt.AssetID, m.bAgt.AssetID)
		})
	})
}
