// Command ceiling is the yardstick of the heartbeat benchmarks (BENCHMARKS.md): a bare
// net/http handler that reads the heartbeat body and writes a JSON answer of the same size
// as the real one, with no auth, no validation and no database. The service's throughput is
// reported as a ratio to this, measured by the same load generator in the same run.
//
//	go run ./internal/tools/ceiling --addr 127.0.0.1:18090
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

// answer has the size and shape of a real heartbeat response.
var answer = []byte(`{"agent_id":"01a222d1-67d3-7c78-bc3f-7eb817cb886b","asset_id":"01a222d1-67d3-7c7b-bf00-89e0d2bd7567","status":"active","accepted":true,"duplicate":false,"received_at":"2026-11-28T15:41:18.896588Z","next_heartbeat_seconds":60}` + "\n")

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agents/{agent_id}/telemetry/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(answer)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
