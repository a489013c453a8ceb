//go:build !unix

package cli

// lockSession does not lock on systems without flock: two runs on one
// kept session there sign each other out (see the unix version).
func lockSession(string) (func(), error) { return func() {}, nil }

// lockDevice does not lock on systems without flock: two runs with one
// --device there take each other's connection over in turn.
func lockDevice(string) (func(), error) { return func() {}, nil }
