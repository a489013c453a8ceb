package region

// Ephemeral traffic across links (issue 14 point 5): presence, typing
// and receipts. Nothing of it is stored or queued: it crosses a link
// only while the link is up, and only what the receiving region asked
// for.
//
// The interested region subscribes, over its own link connection into
// the other region's broker, like any MQTT client:
//
//   - presence/{name} for each user of the other region whose presence a
//     client of this region subscribes to (presence/bob@us). The set is
//     read from this region's replicated route table (interest.go) and
//     kept current as clients subscribe and leave: the other region's
//     broker, whose route table then names the node holding the link,
//     forwards only those users' presence changes, so a change of a user
//     nobody here watches never crosses;
//   - user/+/typing and user/+/receipts, of which the other region's
//     broker delivers to the link only what is addressed to users of this
//     region (user/alice@eu/typing; broker/links.go). Typing and receipts
//     are addressed: the recipient's region is the route.
//
// Subscriptions are QoS 0 on a clean session without expiry: while the
// link is down nothing is queued, and presence of the watched users is
// republished here as "unknown" until the link is back (the retained
// presence of the other region then arrives with the new subscription);
// so is the presence of a user nobody here watches any more, whose copy
// would otherwise go stale.
//
// What arrives is republished in this region with the sender qualified:
// presence/bob becomes the retained presence/bob@us; a typing
// notification or receipt to user/alice@eu/... from bob becomes
// user/alice/... from bob@us. A read receipt's cursor is the reader's
// and durable in the reader's region (committed there before the
// PUBACK); the notification to the other side is ephemeral, as for local
// users.

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Ephemeral kinds, the label of edgechat_region_link_ephemeral_total.
const (
	kindPresence = "presence"
	kindTyping   = "typing"
	kindReceipt  = "receipts"
	kindInvalid  = "invalid"
	kindBlocked  = "blocked"
	// kindUnwatched: the presence of a user the link is not subscribed
	// to (any more): one in flight as it unsubscribed, or sent unasked.
	kindUnwatched = "unwatched"
)

// StatusUnknown is the presence status of a user of another region
// while the link to it is down.
const StatusUnknown = "unknown"

// Blocks answers whether blocker has blocked blocked (the users service).
type Blocks interface {
	IsBlocked(blocker, blocked string) bool
}

// maxFiltersPerSubscribe keeps a SUBSCRIBE or UNSUBSCRIBE of many
// watched users well under any broker's packet size limit.
const maxFiltersPerSubscribe = 200

// ephemeral runs one link's subscriptions on the leader.
type ephemeral struct {
	b    *Bridge
	lc   *linkClient
	link string
	kick chan struct{} // the interest may have changed

	last map[string]wire.Presence // the last presence received per watched user
	// watched: the users whose presence/{name} the live connection is
	// subscribed to or subscribing (serve); only their presence is taken.
	// Marked before the SUBSCRIBE (the retained copy may come before the
	// SUBACK is handled) and cleared before the UNSUBSCRIBE and when the
	// connection ends: paho hands a PUBLISH to receive on a goroutine of
	// its own, so one the other region sent before it handled the
	// UNSUBSCRIBE may be handled after the link retained "unknown".
	watched map[string]bool
}

func newEphemeral(b *Bridge, lc *linkClient) *ephemeral {
	e := &ephemeral{b: b, lc: lc, link: lc.link.Name, kick: make(chan struct{}, 1), last: map[string]wire.Presence{}, watched: map[string]bool{}}
	lc.onPublish = e.receive
	return e
}

func (e *ephemeral) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// run keeps the link connected and its subscriptions equal to the
// region's interest until ctx ends.
func (e *ephemeral) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	var down map[string]bool // watched users already shown unknown in this outage
	for ctx.Err() == nil {
		cl, alive, err := e.lc.connect(ctx)
		if err != nil {
			down = e.unknown(down)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-e.kick:
				down = e.unknown(down)
			}
			backoff = min(2*backoff, e.b.cfg.BackoffMax)
			continue
		}
		backoff = 50 * time.Millisecond
		down = nil
		e.serve(ctx, cl, alive)
	}
}

// serve subscribes on one connection and follows the interest until the
// connection or ctx ends.
func (e *ephemeral) serve(ctx context.Context, cl *paho.Client, alive context.Context) {
	// A SUBSCRIBE or UNSUBSCRIBE waiting for its answer ends with the
	// connection: paho ends it only at its own timeout, and the link
	// dialled again only then (Config.Timeout later).
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(alive, stop)()
	subscribed := map[string]bool{}
	defer func() {
		e.b.mu.Lock()
		clear(e.watched)
		e.b.mu.Unlock()
	}()
	sub := func(filters ...string) bool {
		for len(filters) > 0 {
			n := min(len(filters), maxFiltersPerSubscribe)
			batch := filters[:n]
			filters = filters[n:]
			s := &paho.Subscribe{}
			for _, f := range batch {
				s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 0})
			}
			sctx, cancel := context.WithTimeout(cctx, e.b.cfg.Timeout)
			sa, err := cl.Subscribe(sctx, s)
			cancel()
			if sa == nil || err != nil && len(sa.Reasons) != len(batch) {
				if err == nil {
					err = errors.New("no SUBACK")
				}
				e.b.log.Warn("region link: subscribe failed", "link", e.link, "err", err)
				e.lc.drop(cl)
				return false
			}
			// A SUBACK that refuses some filters (a region of an earlier
			// version lacks one, e.g. group typing) costs only those:
			// dropping the connection for it reconnected for ever, and
			// the link carried nothing meanwhile.
			for i, code := range sa.Reasons {
				if code >= 0x80 && i < len(batch) {
					e.b.log.Warn("region link: the other region refused a subscription; going on without it",
						"link", e.link, "filter", batch[i], "code", code)
				}
			}
		}
		return true
	}
	if !sub("user/+/typing", "user/+/receipts", GroupTypingFilter(e.b.cfg.Region)) {
		return
	}
	for {
		want := e.b.interest(e.link)
		var add, del []string
		for name := range want {
			if !subscribed["presence/"+name] {
				add = append(add, "presence/"+name)
			}
		}
		for f := range subscribed {
			if !want[strings.TrimPrefix(f, "presence/")] {
				del = append(del, f)
			}
		}
		slices.Sort(add)
		e.watch(add, true)
		if !sub(add...) {
			return
		}
		for _, f := range add {
			subscribed[f] = true
		}
		for len(del) > 0 {
			n := min(len(del), maxFiltersPerSubscribe)
			e.watch(del[:n], false)
			uctx, cancel := context.WithTimeout(cctx, e.b.cfg.Timeout)
			_, err := cl.Unsubscribe(uctx, &paho.Unsubscribe{Topics: del[:n]})
			cancel()
			if err != nil {
				e.lc.drop(cl)
				return
			}
			for _, f := range del[:n] {
				delete(subscribed, f)
				// Nobody here watches any more: the copy would go stale.
				name := strings.TrimPrefix(f, "presence/")
				p := wire.Presence{Status: StatusUnknown, LastSeen: e.lastSeen(name)}
				e.republish(wire.Outbound{Topic: wire.PresenceTopic(address.Qualify(name, e.link)), Payload: mustJSON(p), Retain: true})
				e.b.mu.Lock()
				delete(e.last, name)
				e.b.mu.Unlock()
			}
			del = del[n:]
		}
		select {
		case <-ctx.Done():
			return
		case <-alive.Done():
			return
		case <-e.kick:
		}
	}
}

// watch marks the users of presence filters fs watched or not.
func (e *ephemeral) watch(fs []string, on bool) {
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	for _, f := range fs {
		name := strings.TrimPrefix(f, "presence/")
		if on {
			e.watched[name] = true
		} else {
			delete(e.watched, name)
		}
	}
}

// unknown publishes "unknown" for every watched user of the link not yet
// shown so in this outage, and returns the updated set.
func (e *ephemeral) unknown(done map[string]bool) map[string]bool {
	if done == nil {
		done = map[string]bool{}
	}
	for _, name := range slices.Sorted(maps.Keys(e.b.interest(e.link))) {
		if done[name] {
			continue
		}
		done[name] = true
		p := wire.Presence{Status: StatusUnknown, LastSeen: e.lastSeen(name)}
		e.republish(wire.Outbound{Topic: wire.PresenceTopic(address.Qualify(name, e.link)), Payload: mustJSON(p), Retain: true})
	}
	return done
}

// lastSeen is the last seen of name (a user of the link's region) that
// this region knows: what the link last received of them or, when it
// received nothing since this node leads (a leader change, a restart,
// a user nobody watched for a while), the copy retained on this node,
// which an earlier leader's link published. Retaining "unknown" without
// it would erase, on every node, the last seen the region had shown.
func (e *ephemeral) lastSeen(name string) time.Time {
	e.b.mu.Lock()
	p, ok := e.last[name]
	e.b.mu.Unlock()
	if ok {
		return p.LastSeen
	}
	r, ok := e.b.deps.Publisher.(RetainedReader)
	if !ok {
		return time.Time{}
	}
	payload, ok := r.Retained(wire.PresenceTopic(address.Qualify(name, e.link)))
	if !ok || json.Unmarshal(payload, &p) != nil {
		return time.Time{}
	}
	return p.LastSeen
}

// RetainedReader is a Publisher that reads back what is retained on this
// node (the broker): the presence of users of other regions that an
// earlier leader's link retained.
type RetainedReader interface {
	Retained(topic string) (payload []byte, ok bool)
}

// receive handles a publish of the other region to the link's
// subscriptions (paho's goroutine).
func (e *ephemeral) receive(pr paho.PublishReceived) (bool, error) {
	pk := pr.Packet
	e.lc.stats.in(len(pk.Topic) + len(pk.Payload))
	if gid, ok := groupTypingOf(pk.Topic, e.b.cfg.Region); ok {
		e.receiveGroupTyping(gid, pk.Payload) // grouptyping.go
		return true, nil
	}
	out, kind := e.translate(pk.Topic, pk.Payload)
	e.b.m.ephemeral.WithLabelValues(e.link, kind).Inc()
	if out.Topic != "" {
		e.republish(out)
	}
	if kind == kindReceipt {
		e.b.recordRemoteRead(out) // remoteread.go
	}
	return true, nil
}

// translate turns what the link received into what this region
// publishes, or into nothing (kind says why).
func (e *ephemeral) translate(topic string, payload []byte) (wire.Outbound, string) {
	own := e.b.cfg.Region
	t := wire.ParseTopic(topic)
	switch t.Kind {
	case wire.KindPresence:
		if strings.IndexByte(t.Owner, '@') >= 0 {
			return wire.Outbound{}, kindInvalid
		}
		var p wire.Presence
		if json.Unmarshal(payload, &p) != nil || p.Status == "" || len(p.Status) > 32 {
			return wire.Outbound{}, kindInvalid
		}
		e.b.mu.Lock()
		watched := e.watched[t.Owner]
		if watched {
			e.last[t.Owner] = p
		}
		e.b.mu.Unlock()
		if !watched {
			return wire.Outbound{}, kindUnwatched
		}
		return wire.Outbound{Topic: wire.PresenceTopic(address.Qualify(t.Owner, e.link)), Payload: mustJSON(p), Retain: true}, kindPresence
	case wire.KindUserTyping, wire.KindReceipts:
		to, err := address.Parse(t.Owner)
		if err != nil || to.Region != own {
			return wire.Outbound{}, kindInvalid
		}
		var v struct {
			State string `json:"state"`
			From  string `json:"from"`
			Type  string `json:"type"`
			UpTo  string `json:"upTo"`
			Peer  string `json:"peer"`
		}
		if len(payload) > 1024 || json.Unmarshal(payload, &v) != nil {
			return wire.Outbound{}, kindInvalid
		}
		sender := v.From
		if t.Kind == wire.KindReceipts {
			sender = v.Peer
		}
		from, ok := e.remoteUser(sender)
		if !ok {
			return wire.Outbound{}, kindInvalid
		}
		if e.b.deps.Blocks != nil && e.b.deps.Blocks.IsBlocked(to.Name, from) {
			return wire.Outbound{}, kindBlocked
		}
		props := []wire.Prop{{Key: "from", Value: from}}
		if t.Kind == wire.KindUserTyping {
			if v.State != "typing" && v.State != "stopped" {
				return wire.Outbound{}, kindInvalid
			}
			return wire.Outbound{Topic: "user/" + to.Name + "/typing", Payload: mustJSON(wire.Typing{State: v.State, From: from}), UserProps: props}, kindTyping
		}
		var r wire.Receipt
		if json.Unmarshal(payload, &r) != nil || r.Type != wire.ReceiptDelivered && r.Type != wire.ReceiptRead || r.UpTo == 0 {
			return wire.Outbound{}, kindInvalid
		}
		r.Peer = from
		return wire.Outbound{Topic: "user/" + to.Name + "/receipts", Payload: mustJSON(r), UserProps: props}, kindReceipt
	}
	return wire.Outbound{}, kindInvalid
}

// remoteUser qualifies the sender the other region set (its own user,
// name or name@link) with the link's region; anything else is refused.
func (e *ephemeral) remoteUser(s string) (string, bool) {
	a, err := address.Parse(s)
	if err != nil || wire.ValidUserID(a.Name) != nil || a.Region != "" && a.Region != e.link {
		return "", false
	}
	return address.Qualify(a.Name, e.link), true
}

func (e *ephemeral) republish(o wire.Outbound) {
	if err := e.b.deps.Publisher.Publish(o); err != nil {
		e.b.log.Debug("region link: ephemeral message not delivered", "link", e.link, "topic", o.Topic, "err", err)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
