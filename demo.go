package main

import (
	"context"
	"io"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/demo"
)

// startDemo prepares the demo tenant and starts its simulated fleet (serve --demo).
func startDemo(ctx context.Context, a *app.App, base string, stderr io.Writer) error {
	_, err := demo.Start(ctx, a, base, stderr)
	return err
}
