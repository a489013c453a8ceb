package broker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"
)

// BenchmarkRoomFanOut: QoS 0 publishes on plain topics in dev mode, each
// room (topic) with k subscribers, one publisher connection per room,
// over TCP. Subscribers are bare sockets that only split packets, so the
// time is mostly the broker's: its read of the publish, the delivery to
// each subscriber (queue, writer goroutine, encode, write syscall) and
// the hooks. One op is one publish; ns/delivery and allocs/delivery are
// reported. A window of publishes in flight keeps every subscriber's
// queue below mochi's limit, so nothing is dropped (checked).
func BenchmarkRoomFanOut(b *testing.B) {
	type bc struct {
		rooms, k, window int
		direct           bool
	}
	var cases []bc
	for _, direct := range []bool{true, false} {
		for _, window := range []int{1, 32} {
			for _, rk := range [][2]int{{100, 1}, {10, 10}, {2, 100}} {
				cases = append(cases, bc{rk[0], rk[1], window, direct})
			}
		}
	}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("rooms=%d/k=%d/window=%d/direct=%v", tc.rooms, tc.k, tc.window, tc.direct), func(b *testing.B) {
			e := startBroker(b, func(c *Config) {
				c.Dev = true
				c.queuedWrites = !tc.direct
			})
			ctr := &deliveryCounter{wake: make(chan struct{}, 1)}
			got := &ctr.n
			for r := 0; r < tc.rooms; r++ {
				for i := 0; i < tc.k; i++ {
					c := rawAnon(b, e.addr, fmt.Sprintf("s%d-%d", r, i), fmt.Sprintf("bench/room/%d", r))
					go countPublishes(c, ctr)
				}
			}
			pubs := make([]*bufio.Writer, tc.rooms)
			for r := range pubs {
				c := rawAnon(b, e.addr, fmt.Sprintf("p%d", r), "")
				go func() { _, _ = io.Copy(io.Discard, c) }()
				pubs[r] = bufio.NewWriter(c)
			}
			pks := make([][]byte, tc.rooms)
			for r := range pks {
				pk := pahopk.NewControlPacket(pahopk.PUBLISH).Content.(*pahopk.Publish)
				pk.Topic, pk.Payload = fmt.Sprintf("bench/room/%d", r), make([]byte, 100)
				var buf bytesWriter
				if _, err := pk.WriteTo(&buf); err != nil {
					b.Fatal(err)
				}
				pks[r] = buf
			}
			window := tc.window // publishes in flight at most (32: 32/rooms per room, well under the queue of 128)
			want := func(n int) int64 { return int64(n * tc.k) }
			wait := func(n int) {
				ctr.target.Store(want(n))
				for got.Load() < want(n) {
					select {
					case <-ctr.wake:
					case <-time.After(waitFor):
						b.Fatalf("delivered %d of %d", got.Load(), want(n))
					}
				}
			}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i >= window {
					wait(i - window)
				}
				r := i % tc.rooms
				_, _ = pubs[r].Write(pks[r])
				if err := pubs[r].Flush(); err != nil {
					b.Fatal(err)
				}
			}
			wait(b.N)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			d := float64(b.N * tc.k)
			b.ReportMetric(float64(cpu.Nanoseconds())/d, "cpu-ns/delivery")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/d, "ns/delivery")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/d, "allocs/delivery")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/d, "B/delivery")
			if n := got.Load(); n != want(b.N) {
				b.Fatalf("delivered %d, want %d", n, want(b.N))
			}
		})
	}
}

// cpuTime is the CPU time of this process (user + system; the
// subscribers' reads included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type bytesWriter []byte

func (w *bytesWriter) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }

// rawAnon connects an anonymous v5 client (dev mode) and subscribes it
// to topic at QoS 0 unless topic is empty.
func rawAnon(b *testing.B, addr, clientID, topic string) net.Conn {
	b.Helper()
	return rawSub(b, addr, clientID, "", topic, 0)
}

// rawSub connects a v5 client, as user uid (password "tok:{uid}") unless
// uid is empty, and subscribes it to topic at qos unless topic is empty.
func rawSub(b *testing.B, addr, clientID, uid, topic string, qos byte) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.KeepAlive, cp.CleanStart = clientID, 300, true
	if uid != "" {
		cp.Username, cp.UsernameFlag = uid, true
		cp.Password, cp.PasswordFlag = []byte("tok:"+uid), true
	}
	if _, err := cp.WriteTo(c); err != nil {
		b.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(c); err != nil || p.Content.(*pahopk.Connack).ReasonCode != 0 {
		b.Fatalf("connack: %v", err)
	}
	if topic == "" {
		return c
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	sp.Subscriptions = []pahopk.SubOptions{{Topic: topic, QoS: qos}}
	if _, err := sp.WriteTo(c); err != nil {
		b.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(c); err != nil || p.Type != pahopk.SUBACK {
		b.Fatalf("suback: %v", err)
	}
	return c
}

// deliveryCounter counts deliveries and wakes a waiter once n reaches
// target.
type deliveryCounter struct {
	n, target atomic.Int64
	wake      chan struct{}
}

// countPublishes splits the stream into packets and counts PUBLISHes,
// acknowledging those of QoS 1.
func countPublishes(c net.Conn, ctr *deliveryCounter) {
	r := bufio.NewReaderSize(c, 32<<10)
	w := bufio.NewWriter(c)
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		size, mul := 0, 1
		for {
			x, err := r.ReadByte()
			if err != nil {
				return
			}
			size += int(x&127) * mul
			mul <<= 7
			if x < 128 {
				break
			}
		}
		if h>>4 == 3 && h&6 == 2 { // QoS 1: PUBACK the packet ID after the topic
			body, err := r.Peek(size)
			if err != nil {
				return
			}
			tl := int(body[0])<<8 | int(body[1])
			_, _ = w.Write([]byte{0x40, 2, body[2+tl], body[3+tl]})
			if r.Buffered() <= size {
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
		if _, err := r.Discard(size); err != nil {
			return
		}
		if h>>4 == 3 && ctr.n.Add(1) >= ctr.target.Load() {
			select {
			case ctr.wake <- struct{}{}:
			default:
			}
		}
	}
}

// BenchmarkGroupDelivery: one QoS 1 chat message to a group of 10,000
// members of whom `online` are connected and subscribed (QoS 1), from
// the sender's PUBLISH to the last delivery, through a fake ChatStore and
// Membership (asked on every delivery). Unlike BenchmarkGroupFanOut the
// members are bare sockets that only split packets and send PUBACKs, so
// the time is the broker's, not a client library's. Reports the
// publish→last-delivery latency (p50, p99) and CPU per delivery (the
// members' reads and PUBACKs included).
func BenchmarkGroupDelivery(b *testing.B) {
	for _, online := range []int{100, 1000} {
		for _, direct := range []bool{true, false} {
			b.Run(fmt.Sprintf("online=%d/direct=%v", online, direct), func(b *testing.B) {
				e := startBroker(b, func(c *Config) { c.queuedWrites = !direct })
				for i := 0; i < 10000; i++ {
					e.mem.set("big", fmt.Sprintf("m%05d", i), true)
				}
				ctr := &deliveryCounter{wake: make(chan struct{}, 1)}
				for i := 0; i < online; i++ {
					uid := fmt.Sprintf("m%05d", i)
					go countPublishes(rawSub(b, e.addr, uid+"/d", uid, "group/big/newMessage", 1), ctr)
				}
				sender := mustV5(b, e.addr, "m09999", "sender")
				lat := make([]time.Duration, 0, b.N)
				cpu0 := cpuTime()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					want := int64((i + 1) * online)
					ctr.target.Store(want)
					t0 := time.Now()
					if code, _ := sender.Pub(b, "group/big/newMessage", 1, fmt.Sprintf(`{"cid":"g%d","type":"text","body":"fan-out"}`, i)); code != 0 {
						b.Fatalf("PUBACK 0x%02x", code)
					}
					for ctr.n.Load() < want {
						select {
						case <-ctr.wake:
						case <-time.After(waitFor):
							b.Fatalf("delivered %d of %d", ctr.n.Load(), want)
						}
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				cpu := cpuTime() - cpu0
				slices.Sort(lat)
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*online), "cpu-ns/delivery")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds()), "p99-µs")
			})
		}
	}
}
