//go:build unix

package sysmon

import (
	"fmt"
	"os"
	"syscall"
)

func startAgain(env []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("sysmon: finding this program: %w", err)
	}
	if err := syscall.Exec(self, os.Args, env); err != nil {
		return fmt.Errorf("sysmon: starting %s again: %w", self, err)
	}
	return nil // not reached: Exec returns only on failure
}
