package mqtttest

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// The pinger sends nothing while packets flow or before keepAlive seconds
// of silence (paho's DefaultPinger pings at once, from its own
// goroutine: the collision pinger.go explains), then a PINGREQ, and
// fails once a PINGREQ went unanswered for an interval.
func TestIdlePingerPingsOnlyWhenIdle(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	got := make(chan time.Time, 4)
	go func() {
		b := make([]byte, 2)
		for {
			if _, err := io.ReadFull(server, b); err != nil {
				return
			}
			if b[0] != 0xc0 || b[1] != 0 {
				t.Errorf("wrote % x, want a PINGREQ (c0 00)", b)
			}
			got <- time.Now()
		}
	}()
	p := newIdlePinger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, client, 1) }()

	// Traffic for 1.5 keep-alive intervals: no ping.
	for time.Since(start) < 1500*time.Millisecond {
		p.PacketSent()
		select {
		case at := <-got:
			t.Fatalf("PINGREQ %v after the start while packets flowed", at.Sub(start))
		case <-time.After(100 * time.Millisecond):
		}
	}
	quiet := time.Now()
	var first time.Time
	select {
	case first = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no PINGREQ on an idle connection")
	}
	if d := first.Sub(quiet); d < 900*time.Millisecond {
		t.Fatalf("PINGREQ %v after the last packet, before the keep-alive interval", d)
	}
	// Unanswered: the next check fails the pinger.
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an unanswered PINGREQ did not end the pinger with an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pinger went on after an unanswered PINGREQ")
	}
}
