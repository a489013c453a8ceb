package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// signInChargeWindow is how long a failed sign-in answered 503 is
// remembered: sent again with its Idempotency-Key within it (the Go
// SDK's Login sends one sign-in up to three times, within a second,
// when the node answers 503) it takes no more tokens of the
// failed-login buckets. Sent later, it counts again.
const signInChargeWindow = time.Minute

// chargedSignIns remembers the failed sign-ins (name, Idempotency-Key
// and password: another password under the same key is another guess)
// that took their tokens on this node and were answered 503 (the
// account could not be checked as committed: the client is told to
// retry, not that the password is wrong). Only those: a sign-in sent
// again after a definite answer counts again, so that the failed-login
// buckets still bound the hashes one address makes. Only a MAC of
// them is kept, under a secret of this process.
type chargedSignIns struct {
	mu     sync.Mutex
	secret [32]byte
	at     map[[32]byte]time.Time
	max    int
}

func newChargedSignIns(max int) *chargedSignIns {
	c := &chargedSignIns{at: map[[32]byte]time.Time{}, max: max}
	_, _ = rand.Read(c.secret[:])
	return c
}

func (c *chargedSignIns) id(userKey, key, password string) [32]byte {
	m := hmac.New(sha256.New, c.secret[:])
	m.Write([]byte(userKey + "\x00" + key + "\x00" + password))
	var id [32]byte
	copy(id[:], m.Sum(nil))
	return id
}

// retry reports whether this failed sign-in was answered 503 before,
// within the window, after taking its tokens (it then takes none), and
// forgets it. Never for a sign-in without a key.
func (c *chargedSignIns) retry(userKey, key, password string, now time.Time) bool {
	if key == "" {
		return false
	}
	id := c.id(userKey, key, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.at[id]
	delete(c.at, id)
	return ok && now.Sub(at) < signInChargeWindow
}

// unanswered remembers a failed sign-in with a key that took its tokens
// and is answered 503. When the memory is full of recent ones it is not
// remembered (its retry then counts again).
func (c *chargedSignIns) unanswered(userKey, key, password string, now time.Time) {
	if key == "" {
		return
	}
	id := c.id(userKey, key, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.at) >= c.max {
		for k, at := range c.at {
			if now.Sub(at) >= signInChargeWindow {
				delete(c.at, k)
			}
		}
		if len(c.at) >= c.max {
			return
		}
	}
	c.at[id] = now
}
