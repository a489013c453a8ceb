package presence

import (
	"encoding/json"
	"strings"

	"github.com/edgechat/edgechat/internal/wire"
)

// RetainedStore is this node's store of retained messages (implemented
// by the broker, which copies every retained publish to every node).
type RetainedStore interface {
	// Retained is the payload retained on topic.
	Retained(topic string) (payload []byte, ok bool)
	// EachRetained calls fn for every retained message.
	EachRetained(fn func(topic string, payload []byte))
}

// RetainedRestorer is a RetainedStore that takes back the copies a
// restarted node lost, only where it retains nothing yet (the broker).
type RetainedRestorer interface {
	RestoreRetained(topic string, payload []byte) error
}

// RetainedDropper is a RetainedStore that forgets a retained message on
// this node only, delivering nothing (the broker): an erased account's
// presence/{uid}.
type RetainedDropper interface {
	DropRetained(topic string)
}

// retainedPresence reads the retained presence/{uid} messages of store;
// nil when store is nil.
func retainedPresence(store RetainedStore) Retained {
	if store == nil {
		return nil
	}
	return retainedReader{store}
}

type retainedReader struct{ store RetainedStore }

func (r retainedReader) RetainedPresence(uid string) (wire.Presence, bool) {
	if wire.ValidPeerID(uid) != nil { // bob@us: the region link's copy
		return wire.Presence{}, false
	}
	payload, ok := r.store.Retained(wire.PresenceTopic(uid))
	if !ok {
		return wire.Presence{}, false
	}
	return decodePresence(payload)
}

func (r retainedReader) EachRetainedPresence(fn func(uid string, p wire.Presence)) {
	r.store.EachRetained(func(topic string, payload []byte) {
		t := wire.ParseTopic(topic)
		if t.Kind != wire.KindPresence || strings.IndexByte(t.Owner, '@') >= 0 {
			return // a user of another region: the region link's copy
		}
		if p, ok := decodePresence(payload); ok {
			fn(t.Owner, p)
		}
	})
}

// decodePresence reads a retained presence payload; one without a status
// (a cleared or foreign message) does not count.
func decodePresence(payload []byte) (wire.Presence, bool) {
	var p wire.Presence
	if json.Unmarshal(payload, &p) != nil || p.Status == "" {
		return wire.Presence{}, false
	}
	return p, true
}
