package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/edgechat/edgechat/internal/wire"
)

// Batches: a link publishes its outbox entries several to a publish, on
// $link/{region}/batch, so that a link carries more than one message per
// round trip. The payload is a JSON array of frames {"k":kind,"p":payload}
// (kind dm, gmsg, group or gleave: what the single topics $link/{region}/{kind}
// carry; rel, undeliverable and erase: notices.go, erasure.go), in outbox order, at most maxBatchBytes in all. The receiving
// region hands the direct messages to its Raft log one after another
// without waiting (they commit in order, several per round), handles a
// group frame once everything before it committed, and acknowledges the
// publish only when every frame is committed or refused for good (a
// refused frame is skipped there, counted and logged, as the link would
// skip a refused single publish). Anything else that fails (not
// committed) fails the publish: the link sends the whole batch again
// and the origin IDs deduplicate what had committed.

// BatchTopic is the topic a link publishes batches on.
func BatchTopic(fromRegion string) string { return LinkPrefix + fromRegion + "/batch" }

// maxBatchBytes bounds a batch's payload: under the broker's 64 KiB
// packet limit with room for the frames' framing and the topic.
const maxBatchBytes = 60 << 10

// frame is one entry of a batch.
type frame struct {
	Kind string          `json:"k"`
	P    json.RawMessage `json:"p"`
}

// RemoteStarter is a Store that can propose a message now and wait for
// its commit later (the archive's StartRemote); without it a batch's
// messages commit one after another.
type RemoteStarter interface {
	StartRemote(ctx context.Context, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error)
}

// parseBatch reads a batch's payload.
func parseBatch(payload []byte) ([]frame, error) {
	var fs []frame
	if err := json.Unmarshal(payload, &fs); err != nil {
		return nil, fmt.Errorf("region: batch: %v: %w", err, wire.ErrInvalid)
	}
	for _, f := range fs {
		switch f.Kind {
		case "dm", "gmsg", "group", "gleave", frameRel, frameUndeliverable, frameErase:
		default:
			return nil, fmt.Errorf("region: batch: frame kind %q: %w", f.Kind, wire.ErrInvalid)
		}
		if len(f.P) == 0 {
			return nil, fmt.Errorf("region: batch: empty frame: %w", wire.ErrInvalid)
		}
	}
	return fs, nil
}

// final tells a refusal of one message (skipped) from a failure to
// commit (the batch is sent again).
func final(err error) bool {
	return errors.Is(err, wire.ErrForbidden) || errors.Is(err, wire.ErrNotFound) || errors.Is(err, wire.ErrInvalid)
}

// receiveBatch handles one batch of region's link.
func (b *Bridge) receiveBatch(ctx context.Context, region string, payload []byte) error {
	fs, err := parseBatch(payload)
	if err != nil {
		b.count(region, "invalid")
		return err
	}
	var waits []func(context.Context) error
	flush := func() error {
		var failed error
		for _, w := range waits {
			if err := w(ctx); err != nil && !final(err) && failed == nil {
				failed = err
			}
		}
		waits = waits[:0]
		return failed
	}
	for _, f := range fs {
		if f.Kind == "dm" {
			w, err := b.startDM(ctx, region, f.P)
			switch {
			case err == nil:
				waits = append(waits, w)
			case !final(err):
				return errors.Join(err, flush())
			}
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if f.Kind == frameErase {
			if err := b.receiveErase(ctx, region, f.P); err != nil && !final(err) { // erasure.go
				return err
			}
			continue
		}
		if f.Kind == frameRel || f.Kind == frameUndeliverable {
			if err := b.receiveNotice(ctx, region, f.Kind, f.P); err != nil && !final(err) { // notices.go
				return err
			}
			continue
		}
		if err := b.receiveGroup(ctx, region, LinkPrefix+region+"/"+f.Kind, f.P); err != nil && !final(err) {
			return err
		}
	}
	return flush()
}

// startDM checks a direct message of region's link and proposes it; the
// function returned waits for the commit and delivers it. A refusal for
// good is answered with an undeliverable notice (notices.go).
func (b *Bridge) startDM(ctx context.Context, region string, payload []byte) (func(context.Context) error, error) {
	env, err := b.check(region, DMTopic(region), payload)
	if err != nil {
		return nil, b.bounce(ctx, region, payload, err)
	}
	var wait func(context.Context) (wire.Envelope, []byte, bool, error)
	if st, ok := b.deps.Store.(RemoteStarter); ok {
		wait, err = st.StartRemote(ctx, env)
	} else {
		wait = func(ctx context.Context) (wire.Envelope, []byte, bool, error) {
			return b.deps.Store.StoreRemote(ctx, env)
		}
	}
	if err != nil {
		b.count(region, resultOf(err))
		return nil, b.bounce(ctx, region, payload, err)
	}
	return func(ctx context.Context) error {
		stored, out, dup, err := wait(ctx)
		return b.bounce(ctx, region, payload, b.delivered(region, wire.DirectTopic(stored.To), stored, out, dup, err))
	}, nil
}

// outgoing is one outbox entry ready for the link.
type outgoing struct {
	pos     uint64
	kind    string // dm, message (gmsg), state (group)
	payload []byte
}

func frameKind(kind string) string {
	switch kind {
	case "message":
		return "gmsg"
	case "state":
		return "group"
	case "leave":
		return "gleave"
	}
	return kind
}

// batches packs entries, in order, into batch payloads of at most
// maxBatchBytes. An entry that cannot fit even alone is left out
// (tooLarge): the other region's broker would refuse the packet and
// close the link, again at every resend. An erasure goes alone in its
// batch: a region of an earlier version refuses the whole batch for its
// unknown kind, and the link skips what it refuses (erasure.go).
func batches(entries []outgoing) (out [][]outgoing, payloads [][]byte, tooLarge []outgoing) {
	var cur []outgoing
	var buf []byte
	emit := func() {
		if len(cur) > 0 {
			out, payloads = append(out, cur), append(payloads, append(buf, ']'))
		}
		cur, buf = nil, nil
	}
	for _, e := range entries {
		f, _ := json.Marshal(frame{Kind: frameKind(e.kind), P: e.payload})
		if len(f)+2 > maxBatchBytes {
			tooLarge = append(tooLarge, e)
			continue
		}
		alone := e.kind == frameErase
		if len(cur) > 0 && (alone || cur[len(cur)-1].kind == frameErase || len(buf)+1+len(f)+1 > maxBatchBytes) {
			emit()
		}
		if len(cur) == 0 {
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, f...)
		cur = append(cur, e)
	}
	emit()
	return out, payloads, tooLarge
}

// delivered counts a link message's store and, when it was stored now
// (not a resend), delivers it live on topic; it returns the store's
// error.
func (b *Bridge) delivered(region, topic string, stored wire.Envelope, out []byte, dup bool, err error) error {
	switch {
	case err != nil:
		b.count(region, resultOf(err))
		return err
	case dup:
		b.count(region, "duplicate")
		return nil
	}
	props := []wire.Prop{{Key: "id", Value: stored.ID.String()}, {Key: "from", Value: stored.From}}
	scope := wire.ScopeCluster
	if d, ok := b.deps.Store.(wire.CommittedDeliverer); ok && d.DeliversCommitted() {
		// Every node delivers it from its own apply (the archive's live
		// delivery): only nodes of an earlier version get it from here.
		scope = wire.ScopeOlderPeers
	}
	if err := b.deps.Publisher.Publish(wire.Outbound{Topic: topic, Payload: out, QoS: 1, UserProps: props, Scope: scope}); err != nil {
		b.log.Warn("message from another region stored, not delivered live (clients sync it)", "from", stored.From, "topic", topic, "id", stored.ID, "err", err)
	}
	b.count(region, "stored")
	return nil
}
