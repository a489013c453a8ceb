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
	return fakePeer(t, func(c net.Conn) { go serveFake(c, answer) })
}

func serveFake(c net.Conn, answer []byte) {
	answerMQTT(c, func(p any) {
		switch p := p.(type) {
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
		}
	})
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
