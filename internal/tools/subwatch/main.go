// Command subwatch holds one assetUpdated subscription open and reports what it received:
//
//	subwatch -url ws://127.0.0.1:18082/query -token opu_... -for 15s
//
// It prints one JSON object: the number of updates and the time of the last one. The replica
// failover script uses it to show that subscriptions on the surviving replicas keep receiving.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/query", "the GraphQL websocket endpoint")
	token := flag.String("token", "", "a user token (VIEWER is enough)")
	dur := flag.Duration("for", 10*time.Second, "how long to listen")
	flag.Parse()
	out, err := watch(*url, *token, *dur)
	if err != nil {
		out["error"] = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	if err != nil {
		os.Exit(1)
	}
}

func watch(url, token string, dur time.Duration) (map[string]any, error) {
	out := map[string]any{"updates": 0, "last_update_at": nil}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return out, err
	}
	defer c.CloseNow()
	send := func(v any) error { return wsjson.Write(ctx, c, v) }
	if err := send(map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + token}}); err != nil {
		return out, err
	}
	n := 0
	for {
		var msg struct {
			Type string `json:"type"`
		}
		if err := wsjson.Read(ctx, c, &msg); err != nil {
			if ctx.Err() != nil {
				return out, nil // listened for the whole duration
			}
			return out, err
		}
		switch msg.Type {
		case "connection_ack":
			if err := send(map[string]any{"id": "1", "type": "subscribe",
				"payload": map[string]any{"query": "subscription { assetUpdated { id } }"}}); err != nil {
				return out, err
			}
		case "ping":
			_ = send(map[string]string{"type": "pong"})
		case "next":
			n++
			out["updates"], out["last_update_at"] = n, time.Now().UTC().Format(time.RFC3339Nano)
		case "error", "complete":
			return out, fmt.Errorf("subscription ended: %s", msg.Type)
		}
	}
}
