package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUnknownCommandSuggestsWithoutTheWholeUsage(t *testing.T) {
	code, _, stderr := runCLI(t, "tenant", "craete", "--name", "x")
	if code != 2 || !strings.Contains(stderr, `did you mean "tenant create"?`) || strings.Contains(stderr, "commands:") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runCLI(t, "tenant")
	if code != 2 || !strings.Contains(stderr, `did you mean "tenant create"?`) {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runCLI(t, "servr")
	if code != 2 || !strings.Contains(stderr, `did you mean "serve"?`) {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestBadFlagIsOneErrorWithSuggestionAndPointerToHelp(t *testing.T) {
	code, stdout, stderr := runCLI(t, "tenant", "create", "--nmae", "x")
	want := "oneprotect: unknown flag --nmae; did you mean --name?\nrun 'oneprotect tenant create -h' for its flags\n"
	if code != 2 || stderr != want || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

func TestDurationWithoutUnitSaysSo(t *testing.T) {
	code, _, stderr := runCLI(t, "serve", "--offline-after", "5")
	if code != 2 || !strings.Contains(stderr, `--offline-after: missing unit, e.g. 5s`) {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	t.Setenv("ONEPROTECT_STALE_AFTER", "7")
	code, _, stderr = runCLI(t, "serve")
	if code == 0 || !strings.Contains(stderr, "ONEPROTECT_STALE_AFTER") || !strings.Contains(stderr, "missing unit, e.g. 7s") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestHelpListsEnvironmentAndHumanDefaults(t *testing.T) {
	code, stdout, _ := runCLI(t, "serve", "-h")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"env ONEPROTECT_MAX_BODY, default 1MiB", "env ONEPROTECT_OFFLINE_AFTER, default 3m",
		"env ONEPROTECT_STALE_AFTER, default 168h", "env ONEPROTECT_DB, default oneprotect.db"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("serve -h lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "1048576") {
		t.Errorf("serve -h shows bytes:\n%s", stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, "version", "--json")
	var v versionInfo
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || !strings.HasPrefix(v.GoVersion, "go") || v.Version == "" || v.Commit == "" {
		t.Fatalf("exit %d, %q", code, stdout)
	}
}

func TestAdminCommandsRefuseADatabaseThatDoesNotExist(t *testing.T) {
	db := filepath.Join(t.TempDir(), "typo.db")
	for _, args := range [][]string{
		{"tenant", "create", "--db", db, "--name", "Acme"},
		{"user", "create", "--db", db, "--tenant", "acme", "--name", "a", "--role", "admin"},
		{"projections", "rebuild", "--db", db},
		{"token", "revoke", "--db", db, "--id", "01a00000-0000-7000-8000-000000000000"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 1 || !strings.Contains(stderr, db) || !strings.Contains(stderr, "oneprotect migrate") {
			t.Fatalf("%v: exit %d, stderr:\n%s", args, code, stderr)
		}
		if _, err := os.Stat(db); !os.IsNotExist(err) {
			t.Fatalf("%v created %s", args, db)
		}
	}
	if code, _, stderr := runCLI(t, "migrate", "--db", db); code != 0 {
		t.Fatalf("migrate: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "tenant", "create", "--db", db, "--name", "Acme", "--json"); code != 0 {
		t.Fatalf("tenant create after migrate: %d %s", code, stderr)
	}
}

func TestDBErrorsNameThePathOrHost(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-dir", "x.db")
	code, _, stderr := runCLI(t, "migrate", "--db", missing)
	if code != 1 || !strings.Contains(stderr, filepath.Dir(missing)+" does not exist") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}

	dir := t.TempDir()
	code, _, stderr = runCLI(t, "migrate", "--db", dir)
	if code != 1 || !strings.Contains(stderr, dir+": that is a directory") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	code, _, stderr = runCLI(t, "migrate", "--db", "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=2")
	if code != 1 || !strings.Contains(stderr, "PostgreSQL at "+addr) || !strings.Contains(stderr, "refused") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestLoadgenProgressIsPlainLinesOutsideATerminal(t *testing.T) {
	var buf bytes.Buffer
	w := progressWriter(&buf)
	_, _ = w.Write([]byte("\relapsed    1s  requests       100  req/s      100  errors 0        "))
	_, _ = w.Write([]byte("\relapsed    2s  requests       200  req/s      100  errors 0        "))
	_, _ = w.Write([]byte("\r" + strings.Repeat(" ", 80) + "\r"))
	want := "elapsed    1s  requests       100  req/s      100  errors 0\nelapsed    2s  requests       200  req/s      100  errors 0\n"
	if buf.String() != want {
		t.Fatalf("got %q", buf.String())
	}
}
