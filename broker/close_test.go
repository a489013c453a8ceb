package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// Close releases what New bound without Run: the port can be bound again,
// and Run afterwards refuses.
func TestCloseWithoutRun(t *testing.T) {
	b, err := New(Config{MQTTAddr: "127.0.0.1:0", Dev: true, Logger: testutil.QuietLogger()}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.MQTTAddr()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	_ = ln.Close()
	if err := b.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	if err := b.Publish(wire.Outbound{Topic: "sensors/1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
}

// Close stops a running broker: Run returns and clients are disconnected.
func TestCloseStopsRun(t *testing.T) {
	e := startBroker(t, nil)
	mustV5(t, e.addr, "alice", "phone")
	// Counted once the session is established, which may be just after
	// the CONNACK reached the client.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := e.b.Connections(); n != 1 {
			return fmt.Errorf("connections = %d, want 1", n)
		}
		return nil
	})
	if err := e.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.close() // fails the test if Run did not return
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if e.b.Connections() != 0 {
			return errors.New("client still connected")
		}
		return nil
	})
}
