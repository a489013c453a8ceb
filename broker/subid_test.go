package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A retained message sent because of a SUBSCRIBE carries the
// Subscription Identifier that SUBSCRIBE gave, as a live message
// matching the subscription does [MQTT-3.3.4-3]: a client that routes
// messages by their subscription identifier (one handler per
// subscription) gets the current value of a topic where it belongs.
// mochi sent the retained copy without it; Mosquitto sends it.
func TestARetainedMessageCarriesTheSubscriptionIdentifier(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	pub := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "pub"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "sensors/1", QoS: 1, Retain: true, Payload: []byte("21.5")}); err != nil {
		t.Fatal(err)
	}
	pub.Pub(t, "barrier/0", 1, "-") // the retained publish is no longer in flight

	sub := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "sub"})
	id := 7
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}},
		Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id}}); err != nil {
		t.Fatal(err)
	}
	pub.Pub(t, "sensors/2", 1, "19.0")
	// The live message may overtake the retained copy (mochi sends the
	// copy after the SUBACK, from the subscriber's read loop): by topic.
	gotIDs := map[string]any{}
	for range 2 {
		got := sub.Next(t)
		var gotID any
		if got.Properties != nil && got.Properties.SubscriptionIdentifier != nil {
			gotID = *got.Properties.SubscriptionIdentifier
		}
		gotIDs[got.Topic] = gotID
	}
	for _, topic := range []string{"sensors/1", "sensors/2"} {
		if gotID, ok := gotIDs[topic]; !ok || gotID != 7 {
			t.Errorf("%s: received %v with subscription identifier %v, want it with 7 (got %v)", topic, ok, gotID, gotIDs)
		}
	}
}
