package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestEveryCommandIsInReadme holds README.md's command table to the
// binary: every subcommand `edgechat help` lists appears there.
func TestEveryCommandIsInReadme(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var missing []string
	n := 0
	for _, m := range regexp.MustCompile(`(?m)^  (edgechat [a-z]+(?: [a-z]+)?)`).FindAllStringSubmatch(usage, -1) {
		cmd := m[1]
		// "edgechat user add NAME": the command is its lowercase words.
		if !strings.Contains(readme, "`"+cmd) {
			missing = append(missing, cmd)
		}
		n++
	}
	if n < 5 {
		t.Fatalf("found only %d commands in the usage text:\n%s", n, usage)
	}
	if len(missing) > 0 {
		t.Errorf("README.md's command table lacks %d of the %d commands of `edgechat help`: %s", len(missing), n, strings.Join(missing, ", "))
	}
}
