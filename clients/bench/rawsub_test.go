package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// fakeBroker accepts one connection and plays script against it: it
// reads a packet whenever the script says so and writes raw bytes.
func fakeBroker(t *testing.T, script func(read func() (byte, []byte), write func(...byte))) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		read := func() (byte, []byte) {
			typ, err := br.ReadByte()
			if err != nil {
				return 0, nil
			}
			n, _ := binary.ReadUvarint(br)
			b := make([]byte, n)
			_, _ = io.ReadFull(br, b)
			return typ, b
		}
		write := func(b ...byte) { _, _ = c.Write(b) }
		script(read, write)
	}()
	return l.Addr().String()
}

func TestRawSubRefusals(t *testing.T) {
	ctx := context.Background()
	addr := fakeBroker(t, func(read func() (byte, []byte), write func(...byte)) {
		read()                     // CONNECT
		write(0x20, 3, 0, 0x87, 0) // CONNACK: not authorized
	})
	if _, err := dialRawSub(ctx, addr, "c", "u", "t", 0, func([]byte) {}); !errors.Is(err, errRefused) {
		t.Fatalf("refused CONNACK: err = %v", err)
	}
	addr = fakeBroker(t, func(read func() (byte, []byte), write func(...byte)) {
		read()
		write(0x20, 3, 0, 0, 0)
		read()                        // SUBSCRIBE
		write(0x90, 4, 0, 1, 0, 0x87) // SUBACK: refused
	})
	if _, err := dialRawSub(ctx, addr, "c", "u", "t", 1, func([]byte) {}); !errors.Is(err, errRefused) {
		t.Fatalf("refused SUBACK: err = %v", err)
	}
}

// TestRawSubReadsPublishesAndAcks checks the CONNECT and SUBSCRIBE the
// subscriber sends, the payloads it extracts (QoS 0 and QoS 1, with
// properties, split across writes) and the PUBACK it returns.
func TestRawSubReadsPublishesAndAcks(t *testing.T) {
	got := make(chan string, 4)
	pubacks := make(chan []byte, 1)
	connect := make(chan []byte, 1)
	subscribe := make(chan []byte, 1)
	addr := fakeBroker(t, func(read func() (byte, []byte), write func(...byte)) {
		_, b := read()
		connect <- b
		write(0x20, 3, 0, 0, 0)
		_, b = read()
		subscribe <- b
		write(0x90, 4, 0, 1, 0, 1)
		// QoS 0: topic "t", no properties, payload "ab".
		write(0x30, 6, 0, 1, 't', 0, 'a', 'b')
		// QoS 1: topic "t", packet ID 0x0102, 2 bytes of properties, payload "xyz", in two writes.
		write(0x32, 11, 0, 1, 't', 1, 2, 2, 0x01, 0x01)
		time.Sleep(5 * time.Millisecond)
		write('x', 'y', 'z')
		typ, b := read()
		pubacks <- append([]byte{typ}, b...)
	})
	s, err := dialRawSub(context.Background(), addr, "cid", "user", "t", 1, func(p []byte) { got <- string(p) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Disconnect()
	c := <-connect
	if string(c[2:6]) != "MQTT" || c[6] != 5 || c[7] != 0x82 {
		t.Fatalf("CONNECT variable header % x", c[:8])
	}
	if sub := <-subscribe; sub[len(sub)-1] != 1 || string(sub[len(sub)-2:len(sub)-1]) != "t" {
		t.Fatalf("SUBSCRIBE % x", sub)
	}
	for _, want := range []string{"ab", "xyz"} {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("payload %q, want %q", p, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no payload %q", want)
		}
	}
	if a := <-pubacks; len(a) != 3 || a[0] != 0x40 || a[1] != 1 || a[2] != 2 {
		t.Fatalf("PUBACK % x, want 40 (len 2) 01 02", a)
	}
}
