//go:build unix

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockSession takes, for this run, the lock of the session kept at path
// (a lock file beside it, flock: the system drops it when the process
// ends, however it ends). Two runs on one kept session would both
// refresh its token, and the server takes the second refresh of a
// spent token for a thief's (refresh_reused) and ends the session for
// both. ErrSessionInUse when another run holds it.
func lockSession(path string) (release func(), err error) {
	return lockBeside(path, ErrSessionInUse)
}

// lockDevice takes, for this run, the lock of a user's device on a
// server (a lock file beside its state file, path): two runs with one
// --device are one MQTT client ID, each connection taking the other's
// over. ErrDeviceInUse when another run holds it.
func lockDevice(path string) (release func(), err error) {
	return lockBeside(path, ErrDeviceInUse)
}

// lockBeside takes the flock of path+".lock" (the system drops it when
// the process ends, however it ends); inUse when another process holds
// it.
func lockBeside(path string, inUse error) (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cli: lock: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cli: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", inUse, path)
		}
		return nil, fmt.Errorf("cli: lock: %w", err)
	}
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}
