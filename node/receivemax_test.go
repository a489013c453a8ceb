package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A phone with a small Receive Maximum (2) and a kept session loses its
// connection twice while four people send it 160 direct messages:
// every message reaches it over MQTT, and only what was unacknowledged
// at each drop comes again. Deliveries beyond the Receive Maximum wait
// in the session; the broker once left one waiting for good when a
// PUBACK crossed a new delivery, and resent every waiting one at a
// reconnection, over the Receive Maximum, then again as PUBACKs came
// (third_party/mochi-mqtt-server/PATCHES.md, 30).
func TestSmallReceiveMaximumAcrossReconnections(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	const senders, each, drops, receiveMax = 4, 40, 2, 2

	var mu sync.Mutex
	got := map[string]int{} // cid → deliveries
	total := 0
	onPublish := func(p *paho.Publish) {
		time.Sleep(time.Millisecond) // a phone that takes its time: deliveries wait for its PUBACKs
		var env struct{ CID string }
		_ = json.Unmarshal(p.Payload, &env)
		mu.Lock()
		got[env.CID]++
		total++
		mu.Unlock()
	}
	counts := func() (distinct, all int) {
		mu.Lock()
		defer mu.Unlock()
		return len(got), total
	}
	dial := func() *mqtttest.Client {
		return mqtttest.MustDial(t, n.MQTTURL, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok,
			KeepSession: true, SessionExpiry: 600, ReceiveMaximum: receiveMax, OnPublish: onPublish})
	}
	bob := dial()
	bob.MustSub(t, "user/bob/newMessage")

	errs := make(chan error, senders)
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		tok := n.NewUser(t, fmt.Sprintf("sender%d", s))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := sendDirect(n.HTTPURL, tok, "bob", fmt.Sprintf("s%d-%d", s, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for d := 1; d <= drops; d++ {
		checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			if distinct, _ := counts(); distinct < d*senders*each/(drops+1) {
				return fmt.Errorf("%d messages so far", distinct)
			}
			return nil
		})
		_ = bob.Conn.Close() // no DISCONNECT: the connection is lost
		bob = dial()         // the kept session, its subscription and what waits in it
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if distinct, _ := counts(); distinct != senders*each {
			return fmt.Errorf("%d of %d messages delivered", distinct, senders*each)
		}
		return nil
	})
	if _, all := counts(); all-senders*each > drops*receiveMax {
		t.Fatalf("%d deliveries of %d messages over %d lost connections: at most %d may come again",
			all, senders*each, drops, drops*receiveMax)
	}
}

// sendDirect posts a direct message over the HTTP API (safe off the
// test's goroutine).
func sendDirect(httpURL, token, to, cid string) error {
	body, _ := json.Marshal(map[string]string{"to": to, "cid": cid, "type": "text", "body": "hi " + cid})
	req, err := http.NewRequest(http.MethodPost, httpURL+"/chat/messages", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ratelimit.DoHTTP(nil, req, 0)
	if err != nil {
		return fmt.Errorf("send %s: %w", cid, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("send %s: %d", cid, resp.StatusCode)
	}
	return nil
}
