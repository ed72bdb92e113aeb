package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/loadgen"
)

// loadgenCommand runs `oneprotect loadgen`: simulated agents against a server.
func loadgenCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("loadgen")
	var cfg loadgen.Config
	fs.StringVar(&cfg.Server, "server", "", "the service's base URL, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&cfg.EnrollmentToken, "enrollment-token", "", "enrollment token allowing --agents uses (not needed with a matching --agents-file)")
	fs.IntVar(&cfg.Agents, "agents", 100, "simulated agents to enroll")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send heartbeats (0: only enroll)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "concurrent workers (each one request at a time); with --rate, the connections")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: send this many heartbeats a second on a schedule, latency measured from each one's scheduled time (0: closed loop, each worker's next when its last is answered)")
	fs.BoolVar(&cfg.GraphQL, "graphql", false, "send submitHeartbeat mutations to /query instead of REST heartbeats")
	fs.StringVar(&cfg.AgentsFile, "agents-file", "", "reuse the agents in this file if it holds at least --agents, else enroll and write them to it")
	fs.StringVar(&cfg.WrkLua, "wrk-lua", "", "write a wrk script posting heartbeats over the agents to this file (agents in FILE.agents; `-- random` after wrk's URL picks them at random)")
	fs.StringVar(&cfg.Order, "order", loadgen.OrderRoundRobin, "which agent sends each heartbeat: round-robin, random (uniform over the fleet) or once (every agent once, in order, then stop)")
	fs.BoolVar(&cfg.AgentConnections, "agent-connections", false, "every agent sends on a keep-alive connection of its own (opened, with a first heartbeat each, before the timed heartbeats), as a fleet does; default: the workers share --concurrency connections")
	fs.BoolVar(&cfg.MTLS, "mtls", false, "enroll every agent with a CSR (an ECDSA P-256 key of its own) and present its certificate on its own connection (implies --agent-connections; https:// only; keys and certificates go in --agents-file)")
	serverCA := fs.String("server-ca", "", "trust the server's HTTPS certificate if this CA (PEM file) signed it, instead of the system's CAs")
	serverFpr := fs.String("server-fingerprint", "", "trust only the server certificate with this SHA-256 fingerprint (as serve --tls-self-signed prints it)")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object on stdout")
	quiet := fs.Bool("quiet", false, "no live progress line")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.Server == "" {
		return errors.New("--server is required")
	}
	if *serverCA != "" || *serverFpr != "" {
		trust, err := serverTrust(*serverCA, *serverFpr)
		if err != nil {
			return err
		}
		cfg.TLS = trust
	}
	if !*quiet {
		cfg.Progress = progressWriter(stderr)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	sum, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if *asJSON {
		return printJSON(stdout, sum)
	}
	fmt.Fprint(stdout, sum.Format())
	return nil
}

// progressWriter passes the live progress line to a terminal as is (redrawn in place with \r),
// and to anything else (a log file, a pipe) as plain lines, one per update.
func progressWriter(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return w
		}
	}
	return lineWriter{w}
}

type lineWriter struct{ w io.Writer }

func (l lineWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(strings.Trim(string(p), "\r"), " ")
	if strings.TrimSpace(line) == "" {
		return len(p), nil // the terminal's erase of the line
	}
	if _, err := io.WriteString(l.w, line+"\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}
