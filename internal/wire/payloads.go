package wire

import (
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Presence statuses.
const (
	StatusOnline   = "online"
	StatusInactive = "inactive"
	StatusOffline  = "offline"
)

// Presence is the retained payload of presence/{uid}. LastSeen is left
// out when unknown (a user never seen online, another region's user
// nobody here watches), not written as the year 1.
type Presence struct {
	Status   string    `json:"status"`
	LastSeen time.Time `json:"lastSeen,omitzero"`
}

// Receipt types.
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)

// Receipt travels on user/{uid}/receipts. A client publishes
// {"type","upTo"} to the receipts topic of the user whose messages it
// received or read; the server sets Peer to the publishing user.
type Receipt struct {
	Type string       `json:"type"`
	UpTo snowflake.ID `json:"upTo"`
	Peer string       `json:"peer,omitempty"`
}

// Typing travels on user/{uid}/typing; the server sets From.
type Typing struct {
	State string `json:"state,omitempty"` // "typing" (default) or "stopped"
	From  string `json:"from,omitempty"`
}

// Event travels on user/{uid}/events, published by the server only.
type Event struct {
	Type string `json:"type"`
	Data any    `json:"data,omitempty"`
}

// Prop is an MQTT v5 user property.
type Prop struct{ Key, Value string }

// Outbound is a message the server publishes into the broker.
type Outbound struct {
	Topic     string
	Payload   []byte
	Retain    bool
	QoS       byte
	UserProps []Prop
	Scope     Scope
}

// Scope is which subscribers an Outbound is for.
type Scope byte

const (
	// ScopeCluster: the subscribers of every node (forwarded to the other
	// nodes with a matching route).
	ScopeCluster Scope = iota
	// ScopeLocal: this node's subscribers only. Committed chat messages
	// go so: every node delivers them from its own copy of the archive.
	ScopeLocal
	// ScopeOlderPeers: only the subscribers of other nodes that do not
	// deliver committed chat messages themselves (a node of an earlier
	// version, during a rolling upgrade); the node where the message was
	// sent forwards it to them, as every node did before.
	ScopeOlderPeers
)

// CommittedDeliverer is implemented by a chat store that delivers each
// committed message to this node's subscribers itself, on every node
// (the archive, from its apply). Its callers then deliver nothing but
// ScopeOlderPeers copies.
type CommittedDeliverer interface {
	DeliversCommitted() bool
}
