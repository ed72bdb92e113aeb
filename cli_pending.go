package main

import (
	"context"
	"errors"
	"io"

	"github.com/oneprotect/telemetry/internal/app"
)

func agentCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("agent: not implemented yet")
}

func loadgenCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("loadgen: not implemented yet")
}

func startDemo(ctx context.Context, a *app.App, base string, stderr io.Writer) error {
	return errors.New("--demo: not implemented yet")
}
