package mqtt

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// HasSubscribers says no only where Subscribers finds nobody, for filters
// and topics drawn from a small alphabet (exact, +, #, filter/# matching
// filter, shared and inline subscriptions, $-topics); where Subscribers
// finds someone it says yes.
func TestHasSubscribersAgreesWithSubscribers(t *testing.T) {
	words := []string{"a", "b", "$s"}
	rng := rand.New(rand.NewPCG(1, 2))
	randomPath := func(wild bool) string {
		n := 1 + rng.IntN(3)
		p := ""
		for i := range n {
			w := words[rng.IntN(len(words))]
			if i > 0 {
				if w == "$s" {
					w = "b"
				}
				p += "/"
			}
			if wild {
				switch rng.IntN(5) {
				case 0:
					w = "+"
				case 1:
					if i == n-1 {
						w = "#"
					}
				}
			}
			p += w
		}
		return p
	}
	for round := range 300 {
		x := NewTopicsIndex()
		for i := range rng.IntN(4) {
			filter := randomPath(true)
			switch rng.IntN(3) {
			case 0:
				x.Subscribe(fmt.Sprint("cl", i), packets.Subscription{Filter: filter})
			case 1:
				x.Subscribe(fmt.Sprint("cl", i), packets.Subscription{Filter: "$share/g/" + filter})
			case 2:
				x.InlineSubscribe(InlineSubscription{Subscription: packets.Subscription{Filter: filter, Identifier: i + 1},
					Handler: func(cl *Client, sub packets.Subscription, pk packets.Packet) {}})
			}
		}
		for range 20 {
			topic := randomPath(false)
			subs := x.Subscribers(topic)
			found := len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
			if found && !x.HasSubscribers(topic) {
				t.Fatalf("round %d: %s has subscribers %+v, HasSubscribers says no", round, topic, subs)
			}
		}
	}
}

func TestHasSubscribers(t *testing.T) {
	x := NewTopicsIndex()
	if x.HasSubscribers("a/b") || x.HasSubscribers("") {
		t.Fatal("an empty index has subscribers")
	}
	x.Subscribe("cl1", packets.Subscription{Filter: "user/bob/#"})
	x.Subscribe("cl2", packets.Subscription{Filter: "group/g1/newMessage"})
	for topic, want := range map[string]bool{
		"user/bob":                 true, // filter/# matches filter
		"user/bob/newMessage":      true,
		"user/alice/newMessage":    false,
		"group/g1/newMessage":      true,
		"group/g2/newMessage":      false,
		"group/g1/typing":          false,
		"group/g1/newMessage/more": false,
	} {
		if got := x.HasSubscribers(topic); got != want {
			t.Errorf("HasSubscribers(%q) = %v, want %v", topic, got, want)
		}
	}
	x.Unsubscribe("user/bob/#", "cl1")
	if x.HasSubscribers("user/bob/newMessage") {
		t.Error("subscribers left after the last unsubscribed")
	}
}
