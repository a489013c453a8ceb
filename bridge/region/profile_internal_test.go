package region

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// fakeRegion is a minimal MQTT 5 server standing for another region: it
// accepts any CONNECT and SUBSCRIBE and answers every request (a QoS 1
// publish with a response topic) with answer on the response topic.
func fakeRegion(t *testing.T, answer []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			go serveFake(c, answer)
		}
	}()
	return "tcp://" + ln.Addr().String()
}

func serveFake(c net.Conn, answer []byte) {
	for {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch p := cp.Content.(type) {
		case *packets.Connect:
			_, _ = packets.NewControlPacket(packets.CONNACK).WriteTo(c)
		case *packets.Subscribe:
			sa := packets.NewControlPacket(packets.SUBACK)
			sa.Content.(*packets.Suback).PacketID = p.PacketID
			sa.Content.(*packets.Suback).Reasons = []byte{1}
			_, _ = sa.WriteTo(c)
		case *packets.Publish:
			if p.Properties != nil && p.Properties.ResponseTopic != "" {
				out := packets.NewControlPacket(packets.PUBLISH)
				op := out.Content.(*packets.Publish)
				op.Topic, op.Payload = p.Properties.ResponseTopic, answer
				op.Properties.CorrelationData = p.Properties.CorrelationData
				_, _ = out.WriteTo(c)
			}
			pa := packets.NewControlPacket(packets.PUBACK)
			pa.Content.(*packets.Puback).PacketID = p.PacketID
			_, _ = pa.WriteTo(c)
		case *packets.Pingreq:
			_, _ = packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
		}
	}
}

// A linked region answering a profile request with
// {"found":true,"profile":null} (bad input from another region) gets the
// request an unavailable error, cached nowhere; it panicked on a nil
// map and took the node down.
func TestRemoteProfileNullIsMalformed(t *testing.T) {
	e := testEphemeral(t)
	b := e.b
	b.cfg.Timeout, b.cfg.ProfileTTL, b.cfg.Node = 5*time.Second, time.Minute, "n1"
	b.links = map[string]Link{"us": {Name: "us", URL: fakeRegion(t, []byte(`{"found":true,"profile":null}`)), Secret: "a-shared-link-secret-of-the-test"}}
	b.q = queries{clients: map[string]*queryClient{}, cache: map[string]cachedProfile{}}
	defer b.closeQueries()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("RemoteProfile panicked on another region's answer: %v", r)
		}
	}()
	if p, err := b.RemoteProfile(context.Background(), "bob@us"); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("profile %s, err %v; want unavailable", p, err)
	}
	if _, ok := b.q.cache["bob@us"]; ok {
		t.Fatal("a malformed answer was cached")
	}
}
