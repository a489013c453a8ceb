package main

import (
	"os"
	"strconv"
	"testing"
)

func osGetpid() int { return os.Getpid() }

func parseF(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return v
}
