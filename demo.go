package main

import (
	"context"
	"io"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/demo"
)

// startDemo prepares the demo tenant and starts its simulated fleet (serve --demo).
// The fleet's Wait returns once its agents have stopped after ctx ended.
func startDemo(ctx context.Context, a *app.App, base string, stderr io.Writer) (*demo.Fleet, error) {
	return demo.Start(ctx, a, base, stderr)
}
