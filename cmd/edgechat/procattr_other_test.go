//go:build !linux

package main

import "os/exec"

// dieWithTheTest: only Linux has a parent-death signal.
func dieWithTheTest(*exec.Cmd) {}
