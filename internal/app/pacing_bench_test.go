package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// BenchmarkPacingSpread: PACING_AGENTS agents (default 10,000) all start within one second
// against a real server (SQLite, real clock, the default per-agent rate limit) with an interval
// of PACING_INTERVAL (default 10s). Each agent does what `oneprotect agent` does: it sends a
// heartbeat and sleeps for the next_heartbeat_seconds of the answer. The benchmark prints, for
// each of the first four intervals, a histogram of when the server received the heartbeats
// (tenths of the interval), and reports max/mean of the bins of the last interval (1.0 is a
// perfectly even spread). Run it alone:
//
//	go test ./internal/app -run '^$' -bench BenchmarkPacingSpread -benchtime 1x -timeout 20m
func BenchmarkPacingSpread(b *testing.B) {
	agents := envInt(b, "PACING_AGENTS", 10_000)
	interval := 10 * time.Second
	if v := os.Getenv("PACING_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*time.Second {
			b.Fatalf("PACING_INTERVAL=%q: want a duration of at least 2s", v)
		}
		interval = d
	}
	const windows, bins = 4, 10
	for b.Loop() {
		env := testenv.New(b, testenv.NewSQLite(b), func(c *app.Config) {
			c.Now, c.HeartbeatInterval = time.Now, interval
			c.AgentRateLimit = pacing.DefaultAgentRate // on, as in production: paced agents never meet it
		})
		fl := env.NewFleet("Pacing")
		tok := env.EnrollmentToken(fl.Tenant, fl.SiteID, nil, agents)
		client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
		fleet := paceEnroll(b, client, env.Server.URL, tok, agents)

		var mu sync.Mutex
		var received []time.Time
		limited := 0
		start := time.Now()
		end := start.Add(windows * interval)
		var wg sync.WaitGroup
		for _, a := range fleet {
			wg.Go(func() {
				time.Sleep(rand.N(time.Second)) // the whole fleet starts within one second
				for time.Now().Before(end) {
					at, next, status := paceBeat(client, env.Server.URL, a)
					mu.Lock()
					if status == http.StatusTooManyRequests {
						limited++
					} else if status == http.StatusOK {
						received = append(received, at)
					}
					mu.Unlock()
					if next <= 0 {
						next = interval
					}
					time.Sleep(next)
				}
			})
		}
		wg.Wait()

		var hist [windows][bins]int
		for _, t := range received {
			off := t.Sub(start)
			w := int(off / interval)
			if w < 0 || w >= windows {
				continue
			}
			hist[w][int((off%interval)*bins/interval)]++
		}
		var out strings.Builder
		fmt.Fprintf(&out, "%d agents started within 1s, interval %s, %d heartbeats accepted, %d rate-limited\n",
			agents, interval, len(received), limited)
		fmt.Fprintf(&out, "heartbeats received per tenth of each interval (max/mean of the ten bins):\n")
		var last float64
		for w := range windows {
			total, peak := 0, 0
			for _, n := range hist[w] {
				total, peak = total+n, max(peak, n)
			}
			ratio := 0.0
			if total > 0 {
				ratio = float64(peak) / (float64(total) / bins)
			}
			last = ratio
			fmt.Fprintf(&out, "interval %d (%4.0fs-%4.0fs): max/mean %5.2f\n", w+1,
				(time.Duration(w) * interval).Seconds(), (time.Duration(w+1) * interval).Seconds(), ratio)
			for i, n := range hist[w] {
				bar := strings.Repeat("#", n*60/max(1, agents))
				fmt.Fprintf(&out, "  %3d-%3d%% %6d %s\n", i*100/bins, (i+1)*100/bins, n, bar)
			}
		}
		fmt.Print(out.String()) // b.Log would cut the histogram short
		b.ReportMetric(last, "last-interval-max/mean")
		b.ReportMetric(float64(limited), "rate-limited")
	}
}

func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", name, v)
		}
		return n
	}
	return def
}

type paceAgent struct{ id, token string }

// paceEnroll enrolls n agents through REST, 32 at a time.
func paceEnroll(b *testing.B, client *http.Client, base, tok string, n int) []paceAgent {
	out := make([]paceAgent, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				body, _ := json.Marshal(map[string]any{"enrollment_token": tok, "hostname": fmt.Sprintf("pace-%d", i)})
				resp, err := client.Post(base+"/api/v1/agents/enroll", "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					continue
				}
				var en struct {
					AgentID string `json:"agent_id"`
					Token   string `json:"token"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&en)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Errorf("enroll: %d", resp.StatusCode)
				}
				out[i] = paceAgent{en.AgentID, en.Token}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// paceBeat sends one heartbeat; it returns the server's received_at, the wait it asked for
// and the status.
func paceBeat(client *http.Client, base string, a paceAgent) (time.Time, time.Duration, int) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost,
		base+"/api/v1/agents/"+a.id+"/telemetry/heartbeat", strings.NewReader(`{"hostname":"pace"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := client.Do(req)
	if err != nil {
		return time.Time{}, 0, 0
	}
	defer resp.Body.Close()
	var res struct {
		ReceivedAt time.Time `json:"received_at"`
		Next       int       `json:"next_heartbeat_seconds"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&res)
	if resp.StatusCode == http.StatusTooManyRequests {
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return time.Time{}, time.Duration(ra) * time.Second, resp.StatusCode
	}
	return res.ReceivedAt, time.Duration(res.Next) * time.Second, resp.StatusCode
}
