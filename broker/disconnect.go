package broker

import (
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
