package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// DisconnectUser closes every live connection of uid on this node (v5:
// DISCONNECT 0x98 administrative action; 3.1.1: the socket is closed).
// The node calls it on every node once the deletion of uid's account
// commits; reconnecting fails, since the account's tokens are refused.
// Safe from any goroutine.
func (b *Broker) DisconnectUser(uid string) {
	if uid == "" {
		return
	}
	for _, cl := range b.users.sessions(uid) {
		_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	}
}

// DisconnectKey closes every live user connection on this node whose
// access token was signed with the key kid (the key was revoked: a
// forger may hold it). The node calls it on every node once the
// revocation commits; the clients reconnect with a token of another key.
// Safe from any goroutine.
func (b *Broker) DisconnectKey(kid string) {
	if kid == "" {
		return
	}
	var doomed []*mqtt.Client
	b.conns.Range(func(k, v any) bool {
		if ci := v.(*connInfo); ci.p.UserID != "" && ci.p.KeyID == kid {
			doomed = append(doomed, k.(*mqtt.Client))
		}
		return true
	})
	for _, cl := range doomed {
		_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	}
}
