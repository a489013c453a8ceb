package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/waitnotice"
	"github.com/edgechat/edgechat/internal/wire"
)

// jitterChat is fakeChat whose commits take a random while, so that the
// waits of one connection would finish out of order if nothing kept them
// in line.
type jitterChat struct{ *fakeChat }

func (j jitterChat) StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	wait, err := j.fakeChat.StartDirect(ctx, from, to, env)
	if err != nil {
		return nil, err
	}
	done := time.After(time.Duration(rand.Intn(20)) * time.Millisecond)
	return func(ctx context.Context) (wire.Envelope, []byte, bool, error) {
		<-done
		return wait(ctx)
	}, nil
}

// rawV5 is a bare MQTT v5 connection: it can send many publishes without
// waiting and see the answers in the order they come.
type rawV5 struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRawV5(t *testing.T, addr, uid, device string) *rawV5 {
	t.Helper()
	return dialRawV5Keepalive(t, addr, uid, device, 30)
}

func (c *rawV5) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	}
	if err == nil {
		_, err = c.conn.Write(buf.Bytes())
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawV5) read() packets.Packet {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatal(err)
	}
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	default:
		c.t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// A connection sends many durable publishes without waiting: they commit
// concurrently (out of order here), yet the PUBACKs come back in publish
// order with each message's own id, and refusals keep their place.
func TestPipelinedPubacksInOrder(t *testing.T) {
	var jc jitterChat
	e := startBrokerWith(t, nil, func(d *Deps) {
		jc = jitterChat{&fakeChat{}}
		d.Chat = jc
	})
	e.blk.set("carol", "alice", true)
	const n = 50
	c := dialRawV5(t, e.addr, "alice", "phone")
	want := map[int]byte{} // publish index -> refusal code
	for i := 0; i < n; i++ {
		topic, payload := "user/bob/newMessage", fmt.Sprintf(`{"cid":"c%d","type":"text","body":"m%d"}`, i, i)
		switch i {
		case 20:
			payload, want[i] = `{"cid":`, packets.ErrPayloadFormatInvalid.Code // refused before commit
		case 30:
			topic, want[i] = "user/carol/newMessage", packets.ErrNotAuthorized.Code // blocked
		case 40:
			topic, want[i] = "user/dave/typing", 0 // synchronous path: waits for the queue to drain
			payload = `{"state":"typing"}`
		}
		c.write(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   topic, PacketID: uint16(i + 1), Payload: []byte(payload),
		})
	}
	var lastID snowflake.ID
	for i := 0; i < n; i++ {
		ack := c.read()
		if ack.FixedHeader.Type != packets.Puback || ack.PacketID != uint16(i+1) {
			t.Fatalf("answer %d: type %d packet id %d, want PUBACK %d", i, ack.FixedHeader.Type, ack.PacketID, i+1)
		}
		if code, refused := want[i]; refused {
			if ack.ReasonCode != code {
				t.Fatalf("PUBACK %d: reason %#x, want %#x", i+1, ack.ReasonCode, code)
			}
			continue
		}
		if ack.ReasonCode != 0 {
			t.Fatalf("PUBACK %d: reason %#x %q", i+1, ack.ReasonCode, ack.Properties.ReasonString)
		}
		jc.mu.Lock()
		stored := jc.seen["alice\x00"+fmt.Sprintf("c%d", i)]
		jc.mu.Unlock()
		// Stamped in publish order: IDs grow with the packet ID.
		if stored.ID <= lastID {
			t.Fatalf("PUBACK %d: id %s not above the previous %s", i+1, stored.ID, lastID)
		}
		lastID = stored.ID
		if got := ack.Properties.User; len(got) != 2 || got[0] != (packets.UserProperty{Key: "id", Val: stored.ID.String()}) ||
			got[1] != (packets.UserProperty{Key: "from", Val: "alice"}) {
			t.Fatalf("PUBACK %d: properties %+v, want id %s", i+1, got, stored.ID)
		}
	}
	if got := jc.callCount(); got != n-3 {
		t.Fatalf("%d commits, want %d", got, n-3)
	}
}

// More publishes in flight than the advertised Receive Maximum is a
// protocol error: the server disconnects.
func TestPipelineReceiveMaximum(t *testing.T) {
	e := startBrokerWith(t, nil, func(d *Deps) { d.Chat = slowChat{} })
	max := int(e.b.srv.Options.Capabilities.ReceiveMaximum)
	c := dialRawV5(t, e.addr, "alice", "phone")
	for i := 0; i <= max; i++ {
		c.write(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "user/bob/newMessage", PacketID: uint16(i + 1), Payload: []byte(fmt.Sprintf(`{"cid":"c%d","type":"text","body":"x"}`, i)),
		})
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 256)
	for {
		k, err := c.conn.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			break
		}
	}
	// DISCONNECT (0xE0) with reason 0x93 receive maximum exceeded.
	if len(got) < 3 || got[0] != 0xE0 || got[2] != packets.ErrReceiveMaximum.Code {
		t.Fatalf("got % x, want a DISCONNECT 0x93", got)
	}
}

// gateChat is fakeChat whose commits land when their gate (the one
// current at StartDirect) is closed, as when a Raft entry carries many
// of a connection's publishes. Its waits tell the waiter they are about
// to block (waitnotice), as the cluster's do.
type gateChat struct {
	*fakeChat
	started chan struct{} // one token per StartDirect

	mu   sync.Mutex
	gate chan struct{}
}

func (g *gateChat) setGate(c chan struct{}) {
	g.mu.Lock()
	g.gate = c
	g.mu.Unlock()
}

func (g *gateChat) StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	wait, err := g.fakeChat.StartDirect(ctx, from, to, env)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	g.started <- struct{}{}
	return func(ctx context.Context) (wire.Envelope, []byte, bool, error) {
		select {
		case <-gate:
		default:
			waitnotice.Blocking(ctx)
			select {
			case <-gate:
			case <-ctx.Done():
				return wire.Envelope{}, nil, false, ctx.Err()
			}
		}
		return wait(ctx)
	}, nil
}

// PUBACKs whose commits are there together go out in one write, in
// order; a late commit does not hold back the PUBACKs before it.
func TestPipelinedPubacksShareAWrite(t *testing.T) {
	const n = 20
	g := &gateChat{fakeChat: &fakeChat{}, started: make(chan struct{}, n+2), gate: make(chan struct{})}
	e := startBrokerWith(t, nil, func(d *Deps) { d.Chat = g })
	c := dialRawV5(t, e.addr, "alice", "phone")
	publish := func(i int) {
		c.write(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "user/bob/newMessage", PacketID: uint16(i + 1), Payload: []byte(fmt.Sprintf(`{"cid":"c%d","type":"text","body":"x"}`, i)),
		})
		select {
		case <-g.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("publish %d did not reach the store", i)
		}
	}
	expectAck := func(i int) {
		ack := c.read()
		if ack.FixedHeader.Type != packets.Puback || ack.PacketID != uint16(i+1) || ack.ReasonCode != 0 {
			t.Fatalf("answer %d: %+v, want PUBACK %d success", i, ack, i+1)
		}
	}
	first := g.gate
	for i := 0; i < n; i++ {
		publish(i)
	}
	// StartDirect returned for each; wait until the last one is queued
	// too, so that all n commits are there when the gate opens.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if q := queued(e.b); q != n {
			return fmt.Errorf("%d publishes queued, want %d", q, n)
		}
		return nil
	})
	close(first)
	for i := 0; i < n; i++ {
		expectAck(i)
	}
	// The counters move just after the write the client has read.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if acks := counterOf(t, e.b.m.pubacks); acks != n {
			return fmt.Errorf("%v PUBACKs counted, want %d", acks, n)
		}
		return nil
	})
	if writes := counterOf(t, e.b.m.pubackWrites); writes != 1 {
		t.Fatalf("%d PUBACKs in %v writes, want 1", n, writes)
	}

	open := make(chan struct{})
	close(open)
	g.setGate(open)
	publish(n) // commits at once
	late := make(chan struct{})
	g.setGate(late)
	publish(n + 1) // does not commit until late closes
	expectAck(n)
	close(late)
	expectAck(n + 1)
}

func counterOf(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// queued is the number of publishes waiting in the broker's pipelines.
func queued(b *Broker) int {
	n := 0
	b.conns.Range(func(_, v any) bool {
		if p := v.(*connInfo).pipe; p != nil {
			p.mu.Lock()
			n += len(p.q)
			p.mu.Unlock()
		}
		return true
	})
	return n
}

// The answerer's shared deadline: reused within the slack, renewed past
// it or for an earlier deadline, never later than asked for by more than
// nothing (it ends at or before each deadline).
func TestSharedDeadline(t *testing.T) {
	d := sharedDeadline{base: context.Background()}
	defer d.stop()
	t0 := time.Now().Add(time.Hour)
	first := d.until(t0)
	if d.until(t0.Add(deadlineSlack/2)) != first {
		t.Fatal("a deadline within the slack got a new context")
	}
	if dl, _ := first.Deadline(); !dl.Equal(t0) {
		t.Fatalf("deadline %v, want %v", dl, t0)
	}
	later := d.until(t0.Add(2 * deadlineSlack))
	if later == first || first.Err() == nil {
		t.Fatal("past the slack: the old context was kept or not cancelled")
	}
	earlier := d.until(t0.Add(deadlineSlack))
	if earlier == later {
		t.Fatal("an earlier deadline reused a context that ends later")
	}
	if dl, _ := earlier.Deadline(); dl.After(t0.Add(deadlineSlack)) {
		t.Fatalf("deadline %v after the one asked for", dl)
	}
}
