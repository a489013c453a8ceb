package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

var errBadPHC = errors.New("auth: malformed password hash")

// Upper bounds on parameters read back from stored hashes, so that a
// corrupt record cannot make a login allocate gigabytes.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 16
)

// hasher computes argon2id hashes with a bound on how many run at once:
// each costs MemoryKiB of RAM, and a login flood must not exhaust memory.
type hasher struct {
	p     Argon2Params
	sem   chan struct{}
	dummy string // a PHC string no password matches, spent on logins of unknown users

	verifies atomic.Uint64 // hashes computed by verify (tests check unknown users cost one)
}

func newHasher(p Argon2Params) *hasher {
	n := 2 * runtime.GOMAXPROCS(0)
	h := &hasher{p: p, sem: make(chan struct{}, n)}
	// The dummy only has to make verify spend one hash with these
	// parameters; no password needs to match it, so its key is random
	// bytes rather than a hash computed at startup (which cost MemoryKiB of
	// memory, left to the OS only slowly, and tens of milliseconds before
	// the node was ready).
	h.dummy = h.phc(randomBytes(int(p.SaltLen)), randomBytes(int(p.KeyLen)))
	return h
}

func (h *hasher) hash(password string) string {
	salt := randomBytes(int(h.p.SaltLen))
	h.sem <- struct{}{}
	key := argon2.IDKey([]byte(password), salt, h.p.Time, h.p.MemoryKiB, h.p.Threads, h.p.KeyLen)
	<-h.sem
	return h.phc(salt, key)
}

// phc is the PHC string of an argon2id hash with h's parameters.
func (h *hasher) phc(salt, key []byte) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.p.MemoryKiB, h.p.Time, h.p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics instead).
		panic(fmt.Sprintf("auth: random bytes: %v", err))
	}
	return b
}

// verify compares password with a PHC string in constant time.
func (h *hasher) verify(password, phc string) (bool, error) {
	parts := strings.Split(phc, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errBadPHC
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, errBadPHC
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, errBadPHC
	}
	if m == 0 || m > maxArgonMemoryKiB || t == 0 || t > maxArgonTime || p == 0 {
		return false, errBadPHC
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, errBadPHC
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 128 {
		return false, errBadPHC
	}
	h.verifies.Add(1)
	h.sem <- struct{}{}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	<-h.sem
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
