package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// TestAppendEnvelopeMatchesMessagePayload: the raw client splices the
// cid's number and the send time into the same bytes the paho path
// builds with strings, for every body size around the timestamp's width.
func TestAppendEnvelopeMatchesMessagePayload(t *testing.T) {
	stamp := time.Unix(1764770000, 123456789)
	for _, size := range []int{1, 18, 19, 20, 21, 64, 100, 8000} {
		for _, k := range []int64{0, 7, 1234567} {
			want := messagePayload("run-3-12-"+strconv.FormatInt(k, 10), stamp, size)
			got := appendEnvelope(nil, "run-3-12-", k, stamp.UnixNano(), size)
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d k %d:\n got %s\nwant %s", size, k, got, want)
			}
			if !json.Valid(got) {
				t.Fatalf("not JSON: %s", got)
			}
		}
	}
	// Reusing the buffer allocates nothing.
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = appendEnvelope(buf[:0], "run-1-", 99, stamp.UnixNano(), 100) }); n != 0 {
		t.Fatalf("%v allocations per envelope", n)
	}
}

func TestParseSenderSeq(t *testing.T) {
	for in, want := range map[string][2]int64{"0-0": {0, 0}, "12-345": {12, 345}} {
		i, k, ok := parseSenderSeq([]byte(in))
		if !ok || int64(i) != want[0] || k != want[1] {
			t.Fatalf("%q: %d %d %v", in, i, k, ok)
		}
	}
	for _, in := range []string{"", "-", "1-", "-1", "1-2-3", "a-1", "1-2x", "1"} {
		if _, _, ok := parseSenderSeq([]byte(in)); ok {
			t.Fatalf("%q accepted", in)
		}
	}
}

// TestRawClientAgainstANode: the raw client's CONNECT (user, token),
// SUBSCRIBE, pipelined QoS 1 PUBLISHes and PUBACK matching against a
// real edgechat node, compared with what paho gets for the same
// publishes.
func TestRawClientAgainstANode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, err := mqttAddr(n.MQTTURL)
	if err != nil {
		t.Fatal(err)
	}
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")

	t.Run("a forged token is refused", func(t *testing.T) {
		_, err := dialRaw(ctx, rawOptions{Addr: addr, ClientID: "alice/x", User: "alice", Password: "not-a-token"})
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "0x86") {
			t.Fatalf("err = %v, want refused 0x86", err)
		}
	})

	var (
		mu       sync.Mutex
		payloads [][]byte
	)
	got := make(chan struct{}, 1000)
	bob, err := dialRaw(ctx, rawOptions{Addr: addr, ClientID: "bob/raw", User: "bob", Password: bobTok,
		Topic: "user/bob/newMessage", QoS: 1, OnMsg: func(p []byte) {
			mu.Lock()
			payloads = append(payloads, bytes.Clone(p))
			mu.Unlock()
			got <- struct{}{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Disconnect()

	type ack struct {
		tag int64
		err error
	}
	acks := make(chan ack, 1000)
	alice, err := dialRaw(ctx, rawOptions{Addr: addr, ClientID: "alice/raw", User: "alice", Password: aliceTok, Window: 4,
		OnAck: func(tag int64, sent time.Time, err error) {
			if sent.IsZero() {
				t.Errorf("publish %d without a send time", tag)
			}
			acks <- ack{tag, err}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Disconnect()

	// 40 messages through a window of 4, buffered (more) and not.
	const msgs = 40
	stamp := time.Now()
	var buf []byte
	for k := range int64(msgs) {
		buf = appendEnvelope(buf[:0], "t-", k, stamp.UnixNano()+k, 50)
		if err := alice.Publish(ctx, "user/bob/newMessage", buf, k, k%3 != 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.Flush(); err != nil {
		t.Fatal(err)
	}
	for k := range int64(msgs) {
		select {
		case a := <-acks:
			// PUBACKs come in order, each matched to its own publish.
			if a.err != nil || a.tag != k {
				t.Fatalf("ack %d: tag %d err %v", k, a.tag, a.err)
			}
		case <-ctx.Done():
			t.Fatalf("only %d PUBACKs", k)
		}
	}
	if alice.outOfOrder.Load() != 0 || alice.strayAcks.Load() != 0 || alice.InFlight() != 0 {
		t.Fatalf("out of order %d, stray %d, in flight %d", alice.outOfOrder.Load(), alice.strayAcks.Load(), alice.InFlight())
	}
	for i := range msgs {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatalf("only %d deliveries", i)
		}
	}
	mu.Lock()
	for k, p := range payloads {
		// The server stamps id and from; cid and body are ours, in order.
		var env struct{ ID, From, CID, Body string }
		if err := json.Unmarshal(p, &env); err != nil {
			t.Fatalf("delivery %d: %v: %s", k, err, p)
		}
		cid, _ := envelopeCID(p)
		ts, ok := sentTime(p)
		if env.From != "alice" || env.ID == "" || env.CID != "t-"+strconv.Itoa(k) || string(cid) != env.CID ||
			!ok || ts.UnixNano() != stamp.UnixNano()+int64(k) {
			t.Fatalf("delivery %d: %s (sentTime %v %v)", k, p, ts, ok)
		}
	}
	mu.Unlock()

	// A refused publish: the raw client and paho report the same reason
	// code (paho v0.23 drops the PUBACK's reason string: the raw client
	// keeps it).
	if err := alice.Publish(ctx, "user/nobody/newMessage", appendEnvelope(nil, "t-", 99, stamp.UnixNano(), 10), 99, false); err != nil {
		t.Fatal(err)
	}
	a := <-acks
	if a.tag != 99 || a.err == nil {
		t.Fatalf("publish to a missing user: %+v", a)
	}
	pc, err := dial(ctx, dialOptions{Addr: addr, User: "alice", Device: "paho", Token: aliceTok})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Disconnect(&paho.Disconnect{})
	pubs := make(chan error, 1)
	pp := &pahoPub{c: pc, o: durablePubOptions{Topics: []string{"user/nobody/newMessage"}, BodySize: 10,
		OnAck: func(_ int64, _ time.Time, err error) { pubs <- err }}, sem: make(chan struct{}, 1)}
	pp.setPrefix("p-")
	if err := pp.publish(ctx, 0, 1, time.Time{}, 0, false); err != nil {
		t.Fatal(err)
	}
	if perr := <-pubs; perr == nil || !strings.HasPrefix(perr.Error(), "PUBACK 0x90") || !strings.HasPrefix(a.err.Error(), "PUBACK 0x90 ") {
		t.Fatalf("paho: %v; raw: %v", perr, a.err)
	}
}

// TestRawClientFailsInFlightOnClose: publishes in flight when the
// connection ends are reported once each, and nothing is sent after.
func TestRawClientFailsInFlightOnClose(t *testing.T) {
	addr := fakeBroker(t, func(read func() (byte, []byte), write func(...byte)) {
		read()
		write(0x20, 6, 0, 0, 3, 0x21, 0, 2) // CONNACK, receive maximum 2
		read()                              // PUBLISH 1
		read()                              // PUBLISH 2
		write(0x40, 2, 0, 1)                // PUBACK 1
		// then the broker goes away with publish 2 in flight
	})
	var mu sync.Mutex
	outcome := map[int64]error{}
	c, err := dialRaw(context.Background(), rawOptions{Addr: addr, ClientID: "c", User: "u", Window: 8,
		OnAck: func(tag int64, _ time.Time, err error) { mu.Lock(); outcome[tag] = err; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if cap(c.window) != 2 {
		t.Fatalf("window %d, want the server's receive maximum 2", cap(c.window))
	}
	for tag := range int64(2) {
		if err := c.Publish(context.Background(), "t", []byte("x"), tag, false); err != nil {
			t.Fatal(err)
		}
	}
	<-c.done
	if err := c.Publish(context.Background(), "t", []byte("x"), 3, false); !errors.Is(err, errConnLost) {
		t.Fatalf("publish after close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outcome) != 2 || outcome[0] != nil || !errors.Is(outcome[1], errConnLost) {
		t.Fatalf("outcomes %v", outcome)
	}
}

// FuzzRawPackets feeds arbitrary bytes to the raw client's packet reader
// and parsers: they must neither panic nor read past a packet, and a
// PUBLISH the client encodes must parse back to what was encoded.
func FuzzRawPackets(f *testing.F) {
	f.Add([]byte{0x32, 11, 0, 1, 't', 1, 2, 2, 0x01, 0x01, 'x', 'y', 'z'}, "topic", uint16(7), []byte("payload"))
	f.Add([]byte{0x40, 4, 0, 1, 0x90, 0}, "", uint16(1), []byte{})
	f.Add([]byte{0x40, 9, 0, 1, 0x90, 5, 0x1F, 0, 2, 'n', 'o'}, "a/b", uint16(65535), []byte("{}"))
	f.Add([]byte{0x20, 6, 0, 0, 3, 0x21, 0, 2, 0x90, 4, 0, 1, 0, 1}, "user/x/newMessage", uint16(2), bytes.Repeat([]byte("x"), 300))
	f.Add([]byte{0x40, 0xff, 0xff, 0xff, 0xff, 0x7f}, "t", uint16(3), []byte(nil))
	f.Fuzz(func(t *testing.T, stream []byte, topic string, id uint16, payload []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(stream), 64)
		for range 64 {
			typ, body, err := readRawPacket(br)
			if err != nil {
				break
			}
			switch typ >> 4 {
			case 2:
				_, _ = parseConnack(body)
			case 3:
				if p, err := parsePublish(typ, body); err == nil && len(p.Topic)+len(p.Payload) > len(body) {
					t.Fatalf("PUBLISH parsed past its body")
				}
			case 4:
				_, _ = parsePuback(body)
			case 9:
				_, _ = parseSuback(body)
			}
		}
		if len(topic) > 1000 || id == 0 {
			return
		}
		pkt := append(appendPublishHeader(nil, topic, id, len(payload)), payload...)
		typ, body, err := readRawPacket(bufio.NewReader(bytes.NewReader(pkt)))
		if err != nil {
			t.Fatal(err)
		}
		p, err := parsePublish(typ, body)
		if err != nil || p.QoS != 1 || p.ID != id || string(p.Topic) != topic || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("round trip: %+v %v", p, err)
		}
	})
}

func TestPacketBuffered(t *testing.T) {
	for in, want := range map[string]bool{
		"":                     false,
		"\x40":                 false,
		"\x40\x02\x00":         false, // PUBACK cut short
		"\x40\x02\x00\x01":     true,
		"\x40\x02\x00\x01\x40": true,
		"\x30\x80\x01" + strings.Repeat("x", 127): false, // 128-byte body, one byte short
		"\x30\x80\x01" + strings.Repeat("x", 128): true,
		"\xc0\x00": true, // PINGRESP, empty body
	} {
		br := bufio.NewReaderSize(strings.NewReader(in), 512)
		_, _ = br.Peek(len(in)) // fill the buffer
		if got := packetBuffered(br); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}
