package mqtttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// Publishes from many goroutines over a connection that takes each
// Write on its own (net.Pipe, like TLS or WebSocket) reach the broker
// as whole packets: paho writes a packet's header and body separately,
// and without the lock it holds on a sync.Locker connection the writes
// of two packets interleaved (TestTLSListener's flake: a SUBSCRIBE split
// by a PINGREQ).
func TestConcurrentPublishesStayWhole(t *testing.T) {
	const writers, each = 8, 100
	client, server := net.Pipe()
	defer client.Close()
	published := make(chan error, 1)
	go func() { published <- fakeBroker(server, writers*each) }()

	c, _, err := Connect(t, client, Options{ClientID: "writer", OnPublish: func(*paho.Publish) {}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "t/x", Payload: []byte("m")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
}

// fakeBroker answers a CONNECT and PINGREQs on conn and reads want QoS 0
// PUBLISH packets to "t/x" with payload "m"; any other byte is an error.
func fakeBroker(conn net.Conn, want int) error {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for got := 0; got < want; {
		typ, body, err := readPacket(r)
		if err != nil {
			return err
		}
		switch typ >> 4 {
		case 1: // CONNECT
			if _, err := conn.Write([]byte{0x20, 3, 0, 0, 0}); err != nil {
				return err
			}
		case 12: // PINGREQ
			if _, err := conn.Write([]byte{0xd0, 0}); err != nil {
				return err
			}
		case 3: // PUBLISH, QoS 0: topic, properties (none), payload
			if typ != 0x30 || len(body) != 2+3+1+1 || string(body[2:5]) != "t/x" || body[5] != 0 || body[6] != 'm' {
				return fmt.Errorf("publish %d malformed: %02x % x", got, typ, body)
			}
			got++
		default:
			return fmt.Errorf("packet type %02x after %d publishes: % x", typ, got, body)
		}
	}
	return nil
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, nil, fmt.Errorf("remaining length too long")
		}
	}
	if n > 1<<16 {
		return 0, nil, fmt.Errorf("packet %02x of %d bytes", typ, n)
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}
