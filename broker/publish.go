package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// Limits on the small chat payloads.
const (
	maxTypingBytes  = 256
	maxReceiptBytes = 512
)

// reasonNotCommitted is the PUBACK reason when a message could not be
// committed (0x88 server unavailable is a CONNACK/DISCONNECT code only).
const reasonNotCommitted = "server unavailable: not committed"

// onPublish handles a client publish by topic kind. The ACL has already
// run. Returning the packet delivers it (to the topic's subscribers);
// CodeSuccessIgnore acknowledges without delivery; refuse() drops.
func (b *Broker) onPublish(cl *mqtt.Client, pk packets.Packet, p wire.Principal) (packets.Packet, error) {
	if p.Link != "" {
		return b.publishLink(cl, pk, p)
	}
	t := wire.ParseTopic(pk.TopicName)
	class := t.Kind.String()
	b.m.inCounter(t.Kind).Inc()
	if !b.allowPublish(p) {
		return b.refuse(cl, pk, class, "quota", packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: "quota exceeded: publish rate limit"})
	}
	if t.Kind == wire.KindOther {
		return pk, nil // open topic (dev mode): plain MQTT
	}
	// Chat topics never retain what a client sends, and carry only the
	// properties the server sets.
	pk.FixedHeader.Retain = false
	switch t.Kind {
	case wire.KindDirect:
		return b.publishDirect(cl, pk, p, t.Owner, class)
	case wire.KindGroup:
		return b.publishGroup(cl, pk, p, t.Owner, class)
	case wire.KindHeartbeat:
		if p.UserID == "" || p.UserID != t.Owner {
			return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
		}
		if b.deps.Presence != nil {
			b.deps.Presence.Heartbeat(p.UserID)
		}
		return pk, packets.CodeSuccessIgnore // acknowledged, never delivered nor retained
	case wire.KindUserTyping, wire.KindGroupTyping:
		if t.Kind == wire.KindUserTyping {
			var ok bool
			if t.Owner, ok = b.ephemeralPeer(&pk, t.Owner, "typing"); !ok {
				return b.refuse(cl, pk, class, "no_region", packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: "topic name invalid: unknown region"})
			}
		}
		// The ACL let only members through to a group; a user who
		// blocked the sender does not see them typing.
		if t.Kind == wire.KindUserTyping && b.blocked(t.Owner, p.UserID) {
			return b.refuse(cl, pk, class, "blocked", refusalCode(wire.RefusedByRecipient(t.Owner, "typing")))
		}
		state, err := parseTyping(pk.Payload)
		if err != nil {
			return b.refuse(cl, pk, class, "invalid", packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: "payload format invalid: " + err.Error()})
		}
		if gt, ok := b.deps.Links.(GroupTypist); ok && t.Kind == wire.KindGroupTyping {
			gt.GroupTyping(t.Owner, p.UserID, state) // members of other regions (bridge/region)
		}
		// Delivered at QoS 0 whatever the publisher's QoS: typing is live
		// only. At the publisher's QoS 1 a subscriber's offline
		// persistent session queued it, and got "typing" on reconnecting
		// minutes or hours later; and such queued typings took the
		// places (1,024) its chat messages needed.
		props := []packets.UserProperty{{Key: "from", Val: p.UserID}}
		if err := b.inject(pk.TopicName, mustJSON(wire.Typing{State: state, From: p.UserID}), false, 0, props); err != nil {
			b.log.Debug("typing not delivered", "from", p.UserID, "topic", pk.TopicName, "error", err)
		}
		return pk, packets.CodeSuccessIgnore // acknowledged; delivered above
	case wire.KindReceipts:
		var ok bool
		if t.Owner, ok = b.ephemeralPeer(&pk, t.Owner, "receipts"); !ok {
			return b.refuse(cl, pk, class, "no_region", packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: "topic name invalid: unknown region"})
		}
		return b.publishReceipt(cl, pk, p, t.Owner, class)
	}
	// Presence, events, $SYS, malformed chat names: the ACL
	// refuses them first; this is the backstop.
	return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
}

// publishDirect commits a direct message and delivers it to the
// recipient's topic and, as a copy carrying the assigned id, to the
// sender's own user/{from}/newMessage (all the sender's devices,
// including the sending one). A recipient who blocked the sender is
// refused here already, without a commit attempt (the ChatStore refuses
// it too).
//
// A recipient of another region (bob@us) gets no delivery here: the
// committed message waits in the region link's outbox (bridge/region);
// the sender's devices get their copy as usual.
func (b *Broker) publishDirect(cl *mqtt.Client, pk packets.Packet, p wire.Principal, to, class string) (packets.Packet, error) {
	to, remote := b.localPeer(to)
	if !remote && b.blocked(to, p.UserID) && !b.retryOfStored(pk, p) {
		return b.refuse(cl, pk, class, "blocked", refusalCode(wire.RefusedByRecipient(to, "messages")))
	}
	send := sendChat{
		sync: func(ctx context.Context, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
			return b.deps.Chat.SendDirect(ctx, p.UserID, to, env)
		},
	}
	if ps, ok := b.deps.Chat.(PipelinedChatStore); ok {
		send.start = func(ctx context.Context, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
			return ps.StartDirect(ctx, p.UserID, to, env)
		}
	}
	topics := []string{wire.DirectTopic(p.UserID)}
	if !remote && to != p.UserID {
		topics = []string{wire.DirectTopic(to), wire.DirectTopic(p.UserID)}
	}
	return b.commitChat(cl, pk, p, class, "user", send, topics...)
}

// sendChat commits a message: sync in one step, start (when the
// ChatStore can, nil otherwise) in two, for the pipeline.
type sendChat struct {
	sync  func(context.Context, wire.Envelope) (wire.Envelope, []byte, bool, error)
	start func(context.Context, wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error)
}

// commitChat is the pipeline of archived messages: it validates the
// envelope and commits it through send. A QoS 1 publish of a live
// connection is handed to the Raft log at once and answered in order by
// the connection's pipeline once it commits (pipeline.go); otherwise
// the commit happens before mochi sends the PUBACK (mochi runs
// OnPublish first and blocks only this client meanwhile). Either way the
// committed payload is then delivered to topics with v5 user properties
// id and from. noun names what a wire.ErrNotFound means ("user", "group").
func (b *Broker) commitChat(cl *mqtt.Client, pk packets.Packet, p wire.Principal, class, noun string,
	send sendChat, topics ...string) (packets.Packet, error) {
	if p.UserID == "" {
		return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
	}
	env, err := wire.ParseEnvelope(pk.Payload)
	if err != nil {
		return b.refuse(cl, pk, class, "invalid", packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: "payload format invalid: " + err.Error()})
	}
	if b.deps.Chat == nil {
		return b.refuse(cl, pk, class, "unavailable", packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: reasonNotCommitted})
	}
	if pipe := b.pipelineOf(cl); pipe != nil && send.start != nil && pk.FixedHeader.Qos == 1 {
		return b.startChat(cl, pipe, pk, p, class, noun, send, env, topics)
	}
	ctx, cancel := context.WithTimeout(b.baseCtx, b.cfg.CommitTimeout)
	defer cancel()
	stored, payload, dup, err := send.sync(ctx, env)
	if err != nil {
		code, reason := b.commitRefusal(pk.TopicName, p, noun, err)
		return b.refuse(cl, pk, class, reason, code)
	}
	if dup {
		return pk, packets.CodeSuccessIgnore // a retry of a committed message: ack, deliver nothing
	}
	props := chatProps(stored, p)
	// Deliver here rather than let mochi do it after the PUBACK: mochi
	// skips delivery when writing the PUBACK fails (the publisher's
	// connection died), and the retry is then a duplicate that delivers
	// nothing, so a committed message would reach the recipient only at
	// their next sync.
	b.deliverChat(p, stored, payload, pk.FixedHeader.Qos, props, topics)
	// The PUBACK still carries id and from; Ignore stops mochi delivering
	// the packet a second time.
	pk.Payload = payload
	pk.Properties = packets.Properties{User: props}
	pk.Ignore = true
	return pk, nil
}

// startChat is commitChat's pipelined path: the message is checked,
// stamped and handed to the Raft log now, in publish order; mochi sends
// nothing for this publish (ErrRejectPacket) and reads the client's next
// packet, and the connection's pipeline waits for the commit, delivers
// and writes the PUBACK in order.
func (b *Broker) startChat(cl *mqtt.Client, pipe *pipeline, pk packets.Packet, p wire.Principal, class, noun string,
	send sendChat, env wire.Envelope, topics []string) (packets.Packet, error) {
	if !pipe.reserve() {
		return b.overflow(cl, pk)
	}
	// The reader goroutine's own shared deadline (see sharedDeadline): it
	// bounds handing the message to the Raft log.
	wait, err := send.start(pipe.enqueue.until(time.Now().Add(b.cfg.CommitTimeout)), env)
	if err != nil {
		pipe.unreserve()
		code, reason := b.commitRefusal(pk.TopicName, p, noun, err)
		return b.refuse(cl, pk, class, reason, code)
	}
	// The wait keeps what the PUBACK needs, not the publish (a
	// packets.Packet is 800 bytes).
	id, inherited, topic, qos := pk.PacketID, pk.Properties.User, pk.TopicName, pk.FixedHeader.Qos
	pipe.push(&pending{
		deadline: time.Now().Add(b.cfg.CommitTimeout),
		wait: func(ctx context.Context) (packets.Packet, bool, func()) {
			stored, payload, dup, err := wait(ctx)
			switch {
			case err != nil:
				code, reason := b.commitRefusal(topic, p, noun, err)
				ack, write := b.refusalAck(cl, id, inherited, class, reason, code)
				return ack, write, b.v3RetryLater(cl, qos, reason) // closed after the PUBACKs before it
			case dup:
				return b.buildAck(id, inherited, packets.CodeSuccess), true, nil
			}
			props := chatProps(stored, p)
			deliver := func() { b.deliverChat(p, stored, payload, qos, props, topics) }
			return b.buildAck(id, props, packets.CodeSuccess), true, deliver
		},
	})
	return pk, packets.ErrRejectPacket
}

// chatProps are the v5 user properties of a delivered chat message and
// of its PUBACK.
func chatProps(stored wire.Envelope, p wire.Principal) []packets.UserProperty {
	return []packets.UserProperty{{Key: "id", Val: stored.ID.String()}, {Key: "from", Val: p.UserID}}
}

// commitRefusal maps a failed commit to its PUBACK code and metric reason.
func (b *Broker) commitRefusal(topic string, p wire.Principal, noun string, err error) (packets.Code, string) {
	code, reason := depCode(err)
	if reason == "not_found" {
		code.Reason = "topic name invalid: no such " + noun
	}
	b.log.Debug("message refused", "from", p.UserID, "topic", topic, "error", err)
	return code, reason
}

// deliverChat publishes a committed message to its topics. When the chat
// store delivers what it commits on every node (the archive, from its
// apply), this node only forwards it to nodes of an earlier version.
func (b *Broker) deliverChat(p wire.Principal, stored wire.Envelope, payload []byte, qos byte, props []packets.UserProperty, topics []string) {
	if b.deliversCommitted() {
		if b.fwd != nil {
			for _, topic := range topics {
				b.fwd.forwardOlder(topic, payload, qos, props)
			}
		}
		return
	}
	for _, topic := range topics {
		if err := b.inject(topic, payload, false, qos, props); err != nil {
			b.log.Warn("message not delivered live", "from", p.UserID, "topic", topic, "id", stored.ID, "error", err)
		}
	}
}

// retryOfStored reports whether a publish is the retry of a message the
// ChatStore stored (RetryLookup), by its cid.
func (b *Broker) retryOfStored(pk packets.Packet, p wire.Principal) bool {
	rl, ok := b.deps.Chat.(RetryLookup)
	if !ok || p.UserID == "" {
		return false
	}
	env, err := wire.ParseEnvelope(pk.Payload)
	return err == nil && rl.SentBefore(p.UserID, env.CID)
}

// blocked reports whether recipient has blocked sender.
func (b *Broker) blocked(recipient, sender string) bool {
	return b.deps.Blocks != nil && sender != "" && recipient != sender && b.deps.Blocks.IsBlocked(recipient, sender)
}

// publishReceipt rewrites a receipt with the reader as peer; a read
// receipt moves the read cursor (committed) before the PUBACK. A peer
// who blocked the reader gets no receipt; a read one still moves the
// reader's own cursor (acknowledged, delivered to nobody, as POST
// /chat/read does), or the conversation would stay unread for good.
func (b *Broker) publishReceipt(cl *mqtt.Client, pk packets.Packet, p wire.Principal, owner, class string) (packets.Packet, error) {
	if p.UserID == "" {
		return b.refuse(cl, pk, class, "forbidden", packets.ErrNotAuthorized)
	}
	blocked := b.blocked(owner, p.UserID)
	r, err := parseReceipt(pk.Payload)
	switch {
	case blocked && (err != nil || r.Type != wire.ReceiptRead):
		return b.refuse(cl, pk, class, "blocked", refusalCode(wire.RefusedByRecipient(owner, "receipts")))
	case err != nil:
		return b.refuse(cl, pk, class, "invalid", packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: "payload format invalid: " + err.Error()})
	}
	r.Peer = p.UserID
	if r.Type == wire.ReceiptRead {
		if b.deps.Receipts == nil {
			return b.refuse(cl, pk, class, "unavailable", packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: reasonNotCommitted})
		}
		ctx, cancel := context.WithTimeout(b.baseCtx, b.cfg.CommitTimeout)
		defer cancel()
		var err error
		if rc, ok := b.deps.Receipts.(ReceiptClamper); ok {
			// The peer is told no more than the cursor may say: messages
			// not sent yet are not read.
			r.UpTo, err = rc.MarkReadUpTo(ctx, p.UserID, owner, r.UpTo)
		} else {
			err = b.deps.Receipts.MarkRead(ctx, p.UserID, owner, r.UpTo)
		}
		if err != nil {
			code, reason := depCode(err)
			b.log.Debug("read receipt refused", "reader", p.UserID, "peer", owner, "error", err)
			return b.refuse(cl, pk, class, reason, code)
		}
	} else if dc, ok := b.deps.Receipts.(DeliveredClamper); ok {
		// Nor delivered: a receipt up to far ahead would have the peer
		// show every message sent later as delivered at once.
		ctx, cancel := context.WithTimeout(b.baseCtx, b.cfg.CommitTimeout)
		defer cancel()
		var err error
		if r.UpTo, err = dc.DeliveredUpTo(ctx, p.UserID, owner, r.UpTo); err != nil {
			code, reason := depCode(err)
			b.log.Debug("delivered receipt refused", "reader", p.UserID, "peer", owner, "error", err)
			return b.refuse(cl, pk, class, reason, code)
		}
	}
	if blocked {
		b.m.dropped.WithLabelValues(class, "blocked").Inc()
		return pk, packets.CodeSuccessIgnore
	}
	if r.UpTo == 0 {
		return pk, packets.CodeSuccessIgnore // no message in the conversation: nothing to tell
	}
	pk.Payload = mustJSON(r)
	pk.Properties = packets.Properties{User: []packets.UserProperty{{Key: "from", Val: p.UserID}}}
	return pk, nil
}

// refuse drops a publish. mochi sends a negative PUBACK only for a bare
// packets.Code from a v5 QoS 1 publish; for 3.1.1 and QoS 0 a Code would
// NOT stop delivery, so those get ErrRejectPacket (dropped, no PUBACK).
// A v5 QoS 2 publish needs a PUBREC with the reason, which we write
// ourselves (mochi would answer with a PUBACK).
func (b *Broker) refuse(cl *mqtt.Client, pk packets.Packet, class, reason string, code packets.Code) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 1 {
		if pipe := b.pipelineOf(cl); pipe != nil && pipe.busy() {
			// Earlier publishes still wait for their PUBACK: this
			// refusal takes its place behind them.
			if !pipe.reserve() {
				return b.overflow(cl, pk)
			}
			ack, write := b.refusalAck(cl, pk.PacketID, pk.Properties.User, class, reason, code)
			e := &pending{ack: &ack, write: write}
			if retry := b.v3RetryLater(cl, pk.FixedHeader.Qos, reason); retry != nil {
				// Closed once the PUBACKs before it are written.
				e = &pending{deadline: time.Now(), wait: func(context.Context) (packets.Packet, bool, func()) { return ack, write, retry }}
			}
			pipe.push(e)
			return pk, packets.ErrRejectPacket
		}
	}
	b.m.dropped.WithLabelValues(class, reason).Inc()
	if retry := b.v3RetryLater(cl, pk.FixedHeader.Qos, reason); retry != nil {
		retry()
		return pk, packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 {
		switch pk.FixedHeader.Qos {
		case 1:
			return pk, code
		case 2:
			if err := cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
				PacketID:    pk.PacketID,
				ReasonCode:  code.Code,
				Properties:  packets.Properties{ReasonString: code.Reason},
			}); err != nil {
				b.log.Debug("write pubrec", "client", cl.ID, "error", err)
			}
		}
	}
	return pk, packets.ErrRejectPacket
}

// v3RetryLater is what a QoS >= 1 publish of an MQTT 3.1.1 client that
// could not be committed now (metric reason "unavailable": no quorum, a
// timeout, shutting down) does once answered: close the connection. 3.1.1
// has no negative PUBACK, and a client resends an unacknowledged publish
// only when it reconnects [MQTT-4.4.0-1]: dropped on a connection that
// stays, the message was never sent again. nil for any other publish
// (v5 clients get 0x83 and retry; a refusal for good is only dropped).
func (b *Broker) v3RetryLater(cl *mqtt.Client, qos byte, reason string) func() {
	if reason != "unavailable" || qos == 0 || cl.Properties.ProtocolVersion == 5 || cl.Net.Inline {
		return nil
	}
	return func() {
		b.m.refused.WithLabelValues("v3_not_committed").Inc()
		b.log.Debug("a 3.1.1 publish could not be committed: connection closed so that its client resends it", "client", cl.ID)
		_ = b.srv.DisconnectClient(cl, packets.ErrServerBusy)
	}
}

// refusalCode is 0x87 not authorized with the refusal's reason string.
func refusalCode(r *wire.Refusal) packets.Code {
	return packets.Code{Code: packets.ErrNotAuthorized.Code, Reason: r.Error()}
}

// depCode maps a service error to a PUBACK reason code and a metric reason.
func depCode(err error) (packets.Code, string) {
	switch {
	case errors.Is(err, wire.ErrForbidden):
		if r := (*wire.Refusal)(nil); errors.As(err, &r) {
			return refusalCode(r), "forbidden"
		}
		return packets.ErrNotAuthorized, "forbidden"
	case errors.Is(err, wire.ErrNoRegion):
		return packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: "topic name invalid: unknown region"}, "no_region"
	case errors.Is(err, wire.ErrNotFound):
		return packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: "topic name invalid: no such user"}, "not_found"
	case errors.Is(err, wire.ErrQuota):
		return packets.ErrQuotaExceeded, "quota"
	case errors.Is(err, wire.ErrInvalid):
		return packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: "payload format invalid: " + err.Error()}, "invalid"
	}
	return packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: reasonNotCommitted}, "unavailable"
}

// parseTyping accepts an empty payload or {"state":"typing"|"stopped"}.
func parseTyping(payload []byte) (string, error) {
	if len(payload) == 0 {
		return "typing", nil
	}
	if len(payload) > maxTypingBytes {
		return "", fmt.Errorf("typing payload over %d bytes", maxTypingBytes)
	}
	var v struct {
		State *string         `json:"state"`
		From  json.RawMessage `json:"from"` // server-owned: accepted and overwritten
	}
	if err := strictJSON(payload, &v); err != nil {
		return "", fmt.Errorf("typing: %w", err)
	}
	if v.State == nil || *v.State == "" {
		return "typing", nil
	}
	if *v.State != "typing" && *v.State != "stopped" {
		return "", fmt.Errorf("typing: state %q (want typing or stopped)", *v.State)
	}
	return *v.State, nil
}

// parseReceipt accepts {"type":"read"|"delivered","upTo":"<id>"}.
func parseReceipt(payload []byte) (wire.Receipt, error) {
	if len(payload) > maxReceiptBytes {
		return wire.Receipt{}, fmt.Errorf("receipt payload over %d bytes", maxReceiptBytes)
	}
	var r wire.Receipt
	if err := strictJSON(payload, &r); err != nil {
		return wire.Receipt{}, fmt.Errorf("receipt: %w", err)
	}
	if r.Type != wire.ReceiptRead && r.Type != wire.ReceiptDelivered {
		return wire.Receipt{}, fmt.Errorf("receipt: type %q (want read or delivered)", r.Type)
	}
	if r.UpTo == 0 {
		return wire.Receipt{}, errors.New("receipt: upTo must be a message id")
	}
	return r, nil
}

// strictJSON decodes one JSON object, refusing unknown fields and
// trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("broker: marshal: " + err.Error())
	}
	return b
}
