package broker

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil"
)

// BenchmarkDirectMessage: one QoS 1 direct message from PUBLISH to the
// recipient's delivery (PUBACK included), through a fake ChatStore.
func BenchmarkDirectMessage(b *testing.B) {
	e := startBroker(b, nil)
	bob := mustV5(b, e.addr, "bob", "phone")
	bob.MustSub(b, "user/bob/newMessage")
	alice := mustV5(b, e.addr, "alice", "phone")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, _ := alice.Pub(b, "user/bob/newMessage", 1, fmt.Sprintf(`{"cid":"c%d","type":"text","body":"hello"}`, i)); code != 0 {
			b.Fatalf("PUBACK 0x%02x", code)
		}
		bob.Next(b)
	}
}

// BenchmarkIdleConnectionMemory reports the broker heap per idle,
// authenticated, subscribed v5 connection for a few MaxWritesPending and
// buffer sizes (the client side is a bare socket).
func BenchmarkIdleConnectionMemory(b *testing.B) {
	for _, tc := range []struct{ pending, rbuf, wbuf int }{
		{64, 1024, 1024}, {128, 1024, 2048}, {256, 2048, 2048}, {8192, 2048, 2048},
	} {
		b.Run(fmt.Sprintf("pending=%d/read=%d/write=%d", tc.pending, tc.rbuf, tc.wbuf), func(b *testing.B) {
			const n = 300
			for i := 0; i < b.N; i++ {
				e := startBroker(b, func(c *Config) {
					c.MaxWritesPending, c.ReadBufferSize, c.WriteBufferSize = tc.pending, tc.rbuf, tc.wbuf
				})
				before := heapInUse()
				conns := make([]net.Conn, 0, n)
				for j := 0; j < n; j++ {
					conns = append(conns, rawConnect(b, e.addr, fmt.Sprintf("user%03d", j)))
				}
				testutil.CheckFor(b, waitFor, 5*time.Millisecond, func() error {
					if e.b.Connections() != n {
						return fmt.Errorf("%d connections", e.b.Connections())
					}
					return nil
				})
				after := heapInUse()
				b.ReportMetric(float64(after-before)/n, "heap-bytes/conn")
				for _, c := range conns {
					c.Close()
				}
				e.close()
			}
		})
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse) + int64(m.StackInuse)
}

// rawConnect connects uid/dev with a hand-written CONNECT and subscribes
// to the user's inbox; no client library state stays in the heap.
func rawConnect(b *testing.B, addr, uid string) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.Username, cp.UsernameFlag = uid+"/dev", uid, true
	cp.Password, cp.PasswordFlag = []byte("tok:"+uid), true
	cp.KeepAlive, cp.CleanStart = 60, true
	if _, err := cp.WriteTo(c); err != nil {
		b.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(c); err != nil || p.Content.(*pahopk.Connack).ReasonCode != 0 {
		b.Fatalf("connack: %v", err)
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	sp.Subscriptions = []pahopk.SubOptions{{Topic: "user/" + uid + "/newMessage", QoS: 1}}
	if _, err := sp.WriteTo(c); err != nil {
		b.Fatal(err)
	}
	if _, err := pahopk.ReadPacket(c); err != nil {
		b.Fatal(err)
	}
	return c
}
