// Package e2e holds the Go SDK's end-to-end tests: real SDK clients
// against real nodes started with node/nodetest. They live here, not in
// package edgechat's own test files, because `go mod tidy` in an
// application loads the tests of every package the application imports:
// a test of clients/go that imported node/nodetest would make every app
// that uses the SDK download Raft, Badger and the whole server just to
// tidy its go.sum. clients/go/deps_test.go keeps it that way.
package e2e
