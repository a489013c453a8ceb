// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A connection accepted while the server closes must not be counted in
// Listeners.ClientsWg once Close waits on it (a WaitGroup gaining a first
// member during Wait: the race detector reported it in edgechat's CI), and
// one arriving after Close is refused and its connection closed.
func TestCloseRacingNewConnections(t *testing.T) {
	for round := 0; round < 20; round++ {
		s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, b := net.Pipe()
				defer b.Close()
				go func() { _, _ = io.Copy(io.Discard, b) }()
				<-start
				done := make(chan struct{})
				go func() {
					defer close(done)
					_ = s.EstablishConnection("tcp", a)
				}()
				// No CONNECT comes: end the connection so that a client
				// counted before Close finishes too.
				_ = b.Close()
				<-done
			}()
		}
		close(start)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}

	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer b.Close()
	err := s.EstablishConnection("tcp", a)
	if !errors.Is(err, packets.ErrServerShuttingDown) {
		t.Fatalf("EstablishConnection after Close: %v, want %v", err, packets.ErrServerShuttingDown)
	}
	if _, werr := a.Write([]byte{0x10}); !errors.Is(werr, io.ErrClosedPipe) {
		t.Fatalf("connection refused after Close still open: write gave %v", werr)
	}
}
