//go:build unix

package sysmon

import (
	"fmt"
	"os"
	"syscall"
)

func startAgain(env []string) error {
	// /proc/self/exe is the file this process runs, even when its path
	// has meanwhile been given to another build (an upgrade during the
	// start); elsewhere, the path the program was started from.
	self := "/proc/self/exe"
	if _, err := os.Stat(self); err != nil {
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("sysmon: finding this program: %w", err)
		}
	}
	if err := syscall.Exec(self, os.Args, env); err != nil {
		return fmt.Errorf("sysmon: starting %s again: %w", self, err)
	}
	return nil // not reached: Exec returns only on failure
}
