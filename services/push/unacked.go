package push

// Unacknowledged deliveries: a device that is connected when a message
// commits is not pushed, since the message reaches it over MQTT. A
// connection can be open on the server and dead on the phone (the phone
// lost its network without closing it: a lift, a tunnel), and the server
// keeps it until its keepalive runs out (1.5 x keepalive, 90 s for a
// usual 60 s); the message goes into its socket and never reaches the
// app. The node that holds the connection knows: the device does not
// acknowledge (PUBACK) the QoS 1 delivery. When it has not within the
// bound (--push-ack-timeout), or the connection ends first, that node
// records it here (CmdPushUnacked), for a message still in the outbox;
// the push bridge's sender then decides the device as if it were not
// connected, through the outbox's usual exactly-once progress records.
// The records go with the message when it is done.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	prefixUnacked = "r/push/u/" // + id(8) + clientID → nil: a delivery the device did not acknowledge

	// MaxUnackedPerCommand bounds the deliveries one CmdPushUnacked
	// records.
	MaxUnackedPerCommand = 5_000
)

func unackedPrefix(id snowflake.ID) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixUnacked), uint64(id))
}

func unackedKey(id snowflake.ID, clientID string) []byte {
	return append(unackedPrefix(id), clientID...)
}

// UnackedDelivery is a message delivered to a connected device (its
// MQTT client ID, "{uid}/{device}") that the device did not acknowledge.
type UnackedDelivery struct {
	ID     snowflake.ID `json:"id"`
	Client string       `json:"client"`
}

type unackedCmd struct {
	Deliveries []UnackedDelivery `json:"deliveries"`
}

// unackedApplied is applyUnacked's value: the messages it recorded
// deliveries of, told to OnUnacked once committed.
type unackedApplied struct {
	s   *Service
	ids []snowflake.ID
}

func (a unackedApplied) AfterCommit() {
	a.s.out.mu.RLock()
	defer a.s.out.mu.RUnlock()
	for _, fn := range a.s.out.onUnacked {
		for _, id := range a.ids {
			fn(id)
		}
	}
}

// OnUnacked registers fn to hear, on this node, of each message for
// which an unacknowledged delivery was recorded, once committed (on the
// FSM's apply goroutine: fn must not block).
func (s *Service) OnUnacked(fn func(id snowflake.ID)) {
	s.out.mu.Lock()
	s.out.onUnacked = append(s.out.onUnacked, fn)
	s.out.mu.Unlock()
}

// MayPush reports whether uid may have a registered device (a cheap,
// in-memory superset): deliveries to other users' devices are not
// worth watching.
func (s *Service) MayPush(uid string) bool { return s.holders.mayHave(uid) }

// ReportUnacked records deliveries the devices did not acknowledge, of
// the messages still in the outbox to registered devices (the others
// are dropped here: nothing would read them).
func (s *Service) ReportUnacked(ctx context.Context, ds []UnackedDelivery) error {
	var keep []UnackedDelivery
	for _, d := range ds {
		uid, device, ok := cutClientID(d.Client)
		if !ok {
			continue
		}
		queued, err := s.Queued(d.ID)
		if err != nil {
			return err
		}
		if !queued {
			continue
		}
		if _, err := s.Device(uid, device); errors.Is(err, ErrNoDevice) {
			continue
		} else if err != nil {
			return err
		}
		keep = append(keep, d)
	}
	for len(keep) > 0 {
		n := min(len(keep), MaxUnackedPerCommand)
		if _, err := s.propose(ctx, wire.CmdPushUnacked, unackedCmd{Deliveries: keep[:n]}); err != nil {
			return fmt.Errorf("push: record unacknowledged deliveries: %w", err)
		}
		keep = keep[n:]
	}
	return nil
}

// Unacked reports whether the delivery of message id to clientID was
// recorded as not acknowledged.
func (s *Service) Unacked(id snowflake.ID, clientID string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(unackedKey(id, clientID))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ok, err
}

// applyUnacked records deliveries of messages still in the outbox (one
// of a message done would never be cleaned up). Sets are idempotent: a
// delivery reported twice (by a timeout, then by the connection's end)
// is one record.
func (s *Service) applyUnacked(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c unackedCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if len(c.Deliveries) > MaxUnackedPerCommand {
		return nil, fmt.Errorf("%w: %d unacknowledged deliveries", errBadCommand, len(c.Deliveries))
	}
	for _, d := range c.Deliveries {
		if !validClientID(d.Client) {
			return nil, fmt.Errorf("%w: client id %q", errBadCommand, d.Client)
		}
	}
	out := unackedApplied{s: s}
	for _, d := range c.Deliveries {
		if _, err := tx.Get(outboxKey(d.ID)); errors.Is(err, badger.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := tx.Set(unackedKey(d.ID, d.Client), nil); err != nil {
			return nil, err
		}
		out.ids = append(out.ids, d.ID)
	}
	return out, nil
}

func cutClientID(c string) (uid, device string, ok bool) {
	if !validClientID(c) {
		return "", "", false
	}
	for i := 0; i < len(c); i++ {
		if c[i] == '/' {
			return c[:i], c[i+1:], true
		}
	}
	return "", "", false
}
