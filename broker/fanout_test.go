package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil"
)

// Deliveries keep each publisher's order for every subscriber, QoS 0 and
// QoS 1 alike (QoS 1 publishes), whether the publishing goroutine writes them directly
// (mochi ClientDirectWrites, the broker's setting) or the subscriber's
// write loop does; each delivery is counted once in the out metric.
func TestFanOutKeepsPublisherOrder(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			e := startBroker(t, func(c *Config) {
				c.Dev = true
				c.queuedWrites = !direct
				c.MaxWritesPending = 1 << 16 // never full: every message must arrive
			})
			// 900 QoS 1 deliveries per subscriber: under the per-client
			// inflight cap (1024), so that a subscriber whose PUBACKs lag
			// on a loaded machine loses nothing to it (CI flaked at 1,200).
			const pubs, perPub = 3, 300
			type sub struct {
				conn net.Conn
				qos  byte
			}
			var subs []sub
			for i := 0; i < 4; i++ {
				subs = append(subs, sub{rawTestSub(t, e.addr, fmt.Sprintf("s%d", i), "room/1", 0), 0})
			}
			for i := 0; i < 2; i++ {
				subs = append(subs, sub{rawTestSub(t, e.addr, fmt.Sprintf("q%d", i), "room/1", 1), 1})
			}
			results := make([]chan error, len(subs))
			for i, s := range subs {
				results[i] = make(chan error, 1)
				go func() { results[i] <- readInOrder(s.conn, s.qos, pubs, perPub, nil) }()
			}
			var wg sync.WaitGroup
			for p := 0; p < pubs; p++ {
				c := rawTestSub(t, e.addr, fmt.Sprintf("p%d", p), "", 0)
				go func() { _, _ = io.Copy(io.Discard, c) }() // PUBACKs
				wg.Go(func() {
					w := bufio.NewWriter(c)
					for n := 1; n <= perPub; n++ {
						writeTestPublishQoS(w, "room/1", fmt.Appendf(nil, "%d:%d:", p, n), 100, 1, uint16(n))
						if n%7 == 0 {
							_ = w.Flush() // bursts and gaps
						}
					}
					_ = w.Flush()
				})
			}
			wg.Wait()
			for i, r := range results {
				select {
				case err := <-r:
					if err != nil {
						t.Fatalf("subscriber %d (qos %d): %v", i, subs[i].qos, err)
					}
				case <-time.After(waitFor):
					t.Fatalf("subscriber %d: timed out", i)
				}
			}
			want := float64(pubs * perPub * len(subs))
			testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
				if got := metric(t, e, "edgechat_mqtt_messages_out_total", map[string]string{"class": "other"}); got != want {
					return fmt.Errorf("out{class=other} = %v, want %v", got, want)
				}
				return nil
			})
		})
	}
}

// A subscriber that stops reading fills its own socket and queue: its
// messages are dropped (counted), while the publisher and the other
// subscribers go on; what it does get is whole packets in order.
func TestSlowSubscriberDoesNotStallOthers(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.Dev = true
		c.MaxWritesPending = 1024 // slack for the fast one when the machine is slow
	})
	slow := rawTestSub(t, e.addr, "slow", "room/2", 0)
	fast := rawTestSub(t, e.addr, "fast", "room/2", 0)
	const n, size = 4000, 8 << 10 // 32 MB: more than the loopback buffers and the queue hold
	fastDone := make(chan error, 1)
	var fastGot atomic.Int64
	go func() { fastDone <- readInOrder(fast, 0, 1, n, &fastGot) }()

	// The publisher goes at the fast subscriber's pace, a batch well
	// under its queue at a time: the fast one must get everything even on
	// a loaded machine, and a broker that waited on the slow one would
	// stall here (the slow one's queue fills within a few batches).
	pub := rawTestSub(t, e.addr, "pub", "", 0)
	w := bufio.NewWriter(pub)
	const batch = 200
	for i := 1; i <= n; i++ {
		writeTestPublish(w, "room/2", fmt.Appendf(nil, "0:%d:", i), size)
		if i%batch != 0 && i != n {
			continue
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
			if got := fastGot.Load(); got < int64(i) {
				return fmt.Errorf("the fast subscriber has %d of %d while another one does not read", got, i)
			}
			return nil
		})
	}
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatalf("fast subscriber: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the fast subscriber did not get every message while another one did not read")
	}
	dropped := metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": "other", "reason": "queue_full"})
	if dropped == 0 {
		t.Fatal("nothing dropped for the subscriber that did not read")
	}

	// The slow one reads now: whole packets, in order, some missing, until
	// what it got and what was dropped for it make n (the drop count is
	// polled: it may still be growing when the fast one is done).
	type result struct {
		seq int
		err error
	}
	pkts := make(chan result, 64)
	go func() {
		_ = slow.SetReadDeadline(time.Now().Add(waitFor))
		r := bufio.NewReader(slow)
		for {
			pk, err := pahopk.ReadPacket(r)
			if err != nil {
				pkts <- result{err: err}
				return
			}
			if p, ok := pk.Content.(*pahopk.Publish); ok {
				_, seq, err := parseTestPayload(p.Payload, size)
				pkts <- result{seq, err}
			}
		}
	}()
	deadline := time.After(waitFor)
	last, got := 0, 0
	for got+int(dropped) < n {
		select {
		case res := <-pkts:
			if res.err != nil {
				t.Fatalf("slow subscriber after %d messages (last %d): %v", got, last, res.err)
			}
			if res.seq <= last {
				t.Fatalf("slow subscriber: %d after %d", res.seq, last)
			}
			last, got = res.seq, got+1
		case <-time.After(20 * time.Millisecond):
			dropped = metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": "other", "reason": "queue_full"})
		case <-deadline:
			t.Fatalf("slow subscriber: got %d (last %d), %v dropped, of %d", got, last, dropped, n)
		}
	}
	if got+int(dropped) != n {
		t.Fatalf("slow subscriber: got %d, %v dropped, of %d", got, dropped, n)
	}
}

// rawTestSub connects an anonymous v5 client (dev mode) and subscribes it
// to topic at qos unless topic is empty.
func rawTestSub(t *testing.T, addr, clientID, topic string, qos byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.KeepAlive, cp.CleanStart = clientID, 300, true
	if _, err := cp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(c); err != nil || p.Content.(*pahopk.Connack).ReasonCode != 0 {
		t.Fatalf("connack: %v", err)
	}
	if topic == "" {
		return c
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	sp.Subscriptions = []pahopk.SubOptions{{Topic: topic, QoS: qos}}
	if _, err := sp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(c); err != nil || p.Type != pahopk.SUBACK {
		t.Fatalf("suback: %v", err)
	}
	return c
}

// writeTestPublish writes a v5 QoS 0 PUBLISH whose payload is head padded
// with 'x' to size bytes.
func writeTestPublish(w *bufio.Writer, topic string, head []byte, size int) {
	writeTestPublishQoS(w, topic, head, size, 0, 0)
}

func writeTestPublishQoS(w *bufio.Writer, topic string, head []byte, size int, qos byte, id uint16) {
	pk := pahopk.NewControlPacket(pahopk.PUBLISH).Content.(*pahopk.Publish)
	pk.Topic, pk.QoS, pk.PacketID = topic, qos, id
	pk.Payload = append(head, bytes.Repeat([]byte{'x'}, size-len(head))...)
	_, _ = pk.WriteTo(w)
}

// parseTestPayload reads "{publisher}:{seq}:xxx..." and checks the size
// and the padding (a torn or interleaved packet would not pass).
func parseTestPayload(b []byte, size int) (pub, seq int, err error) {
	parts := strings.SplitN(string(b), ":", 3)
	if len(b) != size || len(parts) != 3 || strings.Trim(parts[2], "x") != "" {
		return 0, 0, fmt.Errorf("bad payload (%d bytes) %.40q", len(b), b)
	}
	if pub, err = strconv.Atoi(parts[0]); err != nil {
		return 0, 0, err
	}
	seq, err = strconv.Atoi(parts[1])
	return pub, seq, err
}

// readInOrder reads until it has perPub messages of each of pubs
// publishers, each publisher's in order 1..perPub, acknowledging QoS 1;
// received (when not nil) follows how many it has so far.
func readInOrder(c net.Conn, qos byte, pubs, perPub int, received *atomic.Int64) error {
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	r := bufio.NewReader(c)
	next := make([]int, pubs)
	for i := range next {
		next[i] = 1
	}
	for total := 0; total < pubs*perPub; {
		pk, err := pahopk.ReadPacket(r)
		if err != nil {
			return fmt.Errorf("after %d messages: %w", total, err)
		}
		p, ok := pk.Content.(*pahopk.Publish)
		if !ok {
			continue
		}
		if p.QoS != qos {
			return fmt.Errorf("delivered at QoS %d, want %d", p.QoS, qos)
		}
		if qos > 0 {
			ack := pahopk.NewControlPacket(pahopk.PUBACK).Content.(*pahopk.Puback)
			ack.PacketID = p.PacketID
			if _, err := ack.WriteTo(c); err != nil {
				return err
			}
		}
		pub, seq, err := parseTestPayload(p.Payload, len(p.Payload))
		if err != nil {
			return err
		}
		if pub < 0 || pub >= pubs || seq != next[pub] {
			return fmt.Errorf("publisher %d: got %d, want %d", pub, seq, next[pub])
		}
		next[pub]++
		total++
		if received != nil {
			received.Store(int64(total))
		}
	}
	return nil
}
