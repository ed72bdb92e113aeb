package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's Configuration section names every flag of `oneprotect serve` (the operations
// guide gives each one's default and meaning), so a new flag cannot be documented only in
// some other section.
func TestReadmeConfigurationNamesEveryServeFlag(t *testing.T) {
	code, help, _ := runCLI(t, "serve", "-h")
	if code != 0 {
		t.Fatalf("serve -h: exit %d", code)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	if !strings.Contains(section, "(docs/operations.md#configuration)") {
		t.Error("README.md's Configuration section does not link the operations guide's table")
	}
	for _, m := range regexp.MustCompile(`(?m)^  --(\S+)`).FindAllStringSubmatch(help, -1) {
		if !strings.Contains(section, "`--"+m[1]+"`") {
			t.Errorf("README.md's Configuration section does not name serve --%s", m[1])
		}
	}
}
