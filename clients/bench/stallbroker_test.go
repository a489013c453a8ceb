package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallBroker is a minimal MQTT 5 broker on 127.0.0.1 port 0 that
// accepts any CONNECT and SUBSCRIBE, acknowledges every QoS 1 PUBLISH
// and delivers nothing. It holds back the PUBACK of the first PUBLISH it
// reads for stall, as a server that stops for a moment (a compaction, a
// slow fsync) does; every later one is acknowledged at once. A sender
// with one publish in flight then sends the publishes that fell due
// during the stall late, when the PUBACK frees its slot.
func stallBroker(t *testing.T, stall time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		l.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	var first atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					typ, err := br.ReadByte()
					if err != nil {
						return
					}
					n, err := binary.ReadUvarint(br)
					if err != nil {
						return
					}
					b := make([]byte, n)
					if _, err := io.ReadFull(br, b); err != nil {
						return
					}
					var out []byte
					switch typ >> 4 {
					case 1: // CONNECT
						out = []byte{0x20, 3, 0, 0, 0}
					case 8: // SUBSCRIBE: grant what was asked
						out = []byte{0x90, 4, b[0], b[1], 0, b[len(b)-1] & 3}
					case 3: // PUBLISH
						if (typ>>1)&3 == 0 {
							continue
						}
						tl := int(binary.BigEndian.Uint16(b))
						if first.CompareAndSwap(false, true) {
							time.Sleep(stall) // the stall this broker plays
						}
						out = []byte{0x40, 2, b[2+tl], b[3+tl]}
					case 12: // PINGREQ
						out = []byte{0xD0, 0}
					case 14: // DISCONNECT
						return
					default:
						continue
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// The three open-loop modes below run one publisher with one publish in
// flight at 20/s for 600 ms (publishes due every 50 ms from 0 to 550)
// against a broker that holds the first PUBACK for 400 ms: the publishes
// due at 50..350 ms wait for the slot and go out when the stall ends,
// at least 50 ms after they were due, and are acknowledged at once. With
// the first one, at least 8 of the (up to) 12 publishes are answered 50
// ms or more after they were due, so the PUBACK p50 is at least 50 ms.
// Timed from when they were written, only the first would be, and the
// stall would all but vanish from the percentiles (coordinated
// omission).
const (
	stallFor      = 400 * time.Millisecond
	stallDuration = 600 * time.Millisecond
	stallMinP50Ms = 50.0
)

// ackTimedFromDue fails t unless the PUBACK latencies of a run against
// stallBroker show the stall: timed from when each publish was due.
func ackTimedFromDue(t *testing.T, ack Summary) {
	t.Helper()
	if ack.P50 < stallMinP50Ms {
		t.Fatalf("PUBACK latency p50 %.3f ms of %d, max %.3f ms: the publishes held back by the stall were timed from their late writes, not from when they were due", ack.P50, ack.Count, ack.Max)
	}
}

// TestDurablePubackLatencyCountsFromTheDueTime: bench durable's PUBACK
// latency (its sweep's bar) runs from each publish's scheduled time.
func TestDurablePubackLatencyCountsFromTheDueTime(t *testing.T) {
	for _, client := range []string{clientRaw, clientPaho} {
		t.Run(client, func(t *testing.T) {
			addr := stallBroker(t, stallFor)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := newDurableRun(ctx, DurableConfig{Addrs: []string{addr}, Prefix: "st", Senders: 1, Receivers: 1, InFlight: 1,
				Size: 20, Duration: stallDuration, Drain: time.Millisecond, Client: client}, Env{Tokens: AnonTokens{}})
			if err != nil {
				t.Fatal(err)
			}
			defer r.close()
			st, err := r.run(ctx, 20)
			if err != nil {
				t.Fatal(err)
			}
			if st.Ack == nil || st.Ack.Count < 8 || st.Failed != 0 {
				t.Fatalf("step %+v ack %+v", st, st.Ack)
			}
			ackTimedFromDue(t, *st.Ack)
		})
	}
}

// TestLatencyModePubackCountsFromTheDueTime: the same for bench latency.
func TestLatencyModePubackCountsFromTheDueTime(t *testing.T) {
	addr := stallBroker(t, stallFor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunLoad(ctx, LoadConfig{MQTTAddr: addr, Prefix: "st", Senders: 1, Receivers: 1, InFlight: 1, Rate: 20,
		Duration: stallDuration, Size: 20}, Env{Tokens: AnonTokens{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.PubAck.Count < 8 || res.Failed != 0 {
		t.Fatalf("result %+v", res)
	}
	ackTimedFromDue(t, res.PubAck)
}

// TestFanoutQoS1AckCountsFromTheDueTime: the same for dm and rooms at
// QoS 1 (their PUBACK columns).
func TestFanoutQoS1AckCountsFromTheDueTime(t *testing.T) {
	addr := stallBroker(t, stallFor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := newFanoutRun(ctx, FanoutConfig{Scenario: "dm", Addrs: []string{addr}, Prefix: "st", Topics: 1, Subs: 1, QoS: 1, InFlight: 1,
		Duration: stallDuration, Drain: time.Millisecond}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	st, err := r.run(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ack == nil || st.Ack.Count < 8 || st.Failed != 0 {
		t.Fatalf("step %+v ack %+v", st, st.Ack)
	}
	ackTimedFromDue(t, *st.Ack)
}

// TestStepSendsEverySlotDueBeforeItsEnd: a stall that spans the end of
// a step leaves the publisher behind its schedule; the publishes due
// before the end are still sent (late, timed from their slots) instead
// of being dropped uncounted when the step's time is up, which removed
// the worst latencies of an overloaded step from its percentiles.
func TestStepSendsEverySlotDueBeforeItsEnd(t *testing.T) {
	// 20/s for 200 ms: due at 0, 50, 100 and 150 ms; the first PUBACK
	// comes at 400 ms.
	check := func(t *testing.T, st Step) {
		t.Helper()
		if st.Sent != 4 || st.Ack == nil || st.Ack.Count != 4 || st.Failed != 0 {
			t.Fatalf("sent %d, acked %+v, failed %d: want the 4 publishes due in the step sent and acknowledged", st.Sent, st.Ack, st.Failed)
		}
		// The last of them went out 400 ms or more after the first was
		// due: 4 in 0.4 s or more is 10/s at most, not the offered 20.
		if st.Rate > 10.5 || st.SendRate > 10.5 {
			t.Fatalf("rate %.1f/s, send rate %.1f/s: the publishes sent after the step's end were counted as sent within its 200 ms", st.Rate, st.SendRate)
		}
	}
	t.Run("durable", func(t *testing.T) {
		addr := stallBroker(t, stallFor)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := newDurableRun(ctx, DurableConfig{Addrs: []string{addr}, Prefix: "st", Senders: 1, Receivers: 1, InFlight: 1,
			Size: 20, Duration: 200 * time.Millisecond, Drain: time.Second}, Env{Tokens: AnonTokens{}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		st, err := r.run(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		check(t, st)
	})
	t.Run("dm", func(t *testing.T) {
		addr := stallBroker(t, stallFor)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := newFanoutRun(ctx, FanoutConfig{Scenario: "dm", Addrs: []string{addr}, Prefix: "st", Topics: 1, Subs: 1, QoS: 1, InFlight: 1,
			Duration: 200 * time.Millisecond, Drain: time.Second}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		st, err := r.run(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		check(t, st)
	})
}

// TestStepCountsWhatItNeverSent: when the stall outlasts --drain after
// the step's end, the publishes still waiting for a slot are counted as
// never sent and the step fails the sweep's bar.
func TestStepCountsWhatItNeverSent(t *testing.T) {
	addr := stallBroker(t, stallFor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := newDurableRun(ctx, DurableConfig{Addrs: []string{addr}, Prefix: "st", Senders: 1, Receivers: 1, InFlight: 1,
		Size: 20, Duration: 200 * time.Millisecond, Drain: time.Millisecond}, Env{Tokens: AnonTokens{}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	st, err := r.run(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sent != 1 || st.Unsent != 3 || st.OK(time.Hour) {
		t.Fatalf("sent %d, unsent %d, OK %v: want 1 sent, 3 never sent, the step failed", st.Sent, st.Unsent, st.OK(time.Hour))
	}
}

// TestLatencyModeSendsEverySlotDueBeforeItsEnd: bench latency, like the
// scenarios, sends the publishes that fell due before its end while it
// waited for a slot, and does not credit them to its window.
func TestLatencyModeSendsEverySlotDueBeforeItsEnd(t *testing.T) {
	addr := stallBroker(t, stallFor)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunLoad(ctx, LoadConfig{MQTTAddr: addr, Prefix: "st", Senders: 1, Receivers: 1, InFlight: 1, Rate: 20,
		Duration: 200 * time.Millisecond, Drain: time.Second, Size: 20}, Env{Tokens: AnonTokens{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 4 || res.Committed != 4 || res.Failed != 0 {
		t.Fatalf("sent %d, committed %d, failed %d: want the 4 publishes due in the run sent and committed", res.Sent, res.Committed, res.Failed)
	}
	if res.Rate > 10.5 {
		t.Fatalf("committed %.1f/s: the publishes sent after the run's end were credited to its 200 ms", res.Rate)
	}
}
