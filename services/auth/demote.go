package auth

import (
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Revoking the admin role takes effect at once: an access token carries
// the role (adm) for its whole life, so a demoted admin's token of
// before would otherwise reach every admin endpoint until it expired,
// enough to grant the role back or to demote the operator who revoked
// it. The revocation records when it happened (r/auth/demoted/{uid}),
// every node keeps those times in memory, and a token issued before the
// user's last demotion verifies as a user's, not an admin's (the token
// stays valid: the user is still signed in). A token minted afterwards
// carries the account's role as it is then.
const prefixDemoted = "r/auth/demoted/" // + uid → time (JSON)

// recordDemotion writes uid's demotion time (the latest of the stored
// one and at) in the FSM transaction.
func recordDemotion(tx *badger.Txn, uid string, at time.Time) error {
	return recordLatest(tx, prefixDemoted+uid, at)
}

// demotionCommitted updates every node's copy once a revocation of the
// admin role commits.
type demotionCommitted struct {
	s   *Service
	uid string
	at  time.Time
}

// AfterCommit implements fsm.AfterCommitter.
func (d *demotionCommitted) AfterCommit() {
	d.s.demoted.put(d.uid, d.at)
	d.s.eraseMu.Lock()
	fns := append([]func(string){}, d.s.onDemoted...)
	d.s.eraseMu.Unlock()
	for _, fn := range fns {
		fn(d.uid)
	}
}

// OnDemoted registers fn to run on every node once the revocation of a
// user's admin role is committed (the broker takes $SYS from their live
// MQTT connections, which were authorized with the role at CONNECT). It
// runs on the FSM's goroutine, after the node's copy of the demotion
// times is updated: fn must not block.
func (s *Service) OnDemoted(fn func(uid string)) {
	s.eraseMu.Lock()
	s.onDemoted = append(s.onDemoted, fn)
	s.eraseMu.Unlock()
}

// adminNow tells whether a token's admin claim still holds: it was
// issued after the user's last demotion (a token of no account, the
// operator's, keeps its claim).
func (s *Service) adminNow(c *accessClaims) bool {
	if !c.Admin {
		return false
	}
	at, ok := s.demoted.get(c.Subject)
	return !ok || !c.issuedBefore(at)
}
