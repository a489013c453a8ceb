package main

import (
	"os/exec"
	"syscall"
)

// dieWithTheTest makes the kernel kill cmd when the test binary dies
// (killed at a timeout, or by hand): a node left behind would hold its
// ports and data directory and burn CPU under the next run.
func dieWithTheTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
