package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README and docs/ stand alone: every relative link names a file of the repository, and
// nothing points at material a user who clones the project does not have.
func TestDocsStandAlone(t *testing.T) {
	files, _ := filepath.Glob("docs/*.md")
	files = append(files, "README.md", "CHANGELOG.md")
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	outside := regexp.MustCompile(`\.\./shared|CONTRACT|§\s*\d|the performance issue`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if m := outside.FindString(text); m != "" {
			t.Errorf("%s refers to %q, which is not in the repository", f, m)
		}
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			path := filepath.Join(filepath.Dir(f), target)
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links %s, which does not exist", f, m[1])
			}
			if rel, err := filepath.Rel(".", path); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links %s, outside the repository", f, m[1])
			}
		}
	}
}

// Every flag of `oneprotect serve` is in the operations guide's table.
func TestOperationsGuideListsEveryServeFlag(t *testing.T) {
	code, help, _ := runCLI(t, "serve", "-h")
	if code != 0 {
		t.Fatalf("serve -h: exit %d", code)
	}
	guide, err := os.ReadFile("docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^  --(\S+)`).FindAllStringSubmatch(help, -1) {
		if !strings.Contains(string(guide), "| `--"+m[1]+"` |") {
			t.Errorf("docs/operations.md does not list serve --%s", m[1])
		}
	}
}
