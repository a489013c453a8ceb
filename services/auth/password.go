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
	dummy string // a hash of nothing, spent on logins of unknown users

	verifies atomic.Uint64 // hashes computed by verify (tests check unknown users cost one)
}

func newHasher(p Argon2Params) *hasher {
	n := 2 * runtime.GOMAXPROCS(0)
	h := &hasher{p: p, sem: make(chan struct{}, n)}
	h.dummy = h.hash("edgechat-no-such-user")
	return h
}

func (h *hasher) hash(password string) string {
	salt := make([]byte, h.p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics instead).
		panic(fmt.Sprintf("auth: random salt: %v", err))
	}
	h.sem <- struct{}{}
	key := argon2.IDKey([]byte(password), salt, h.p.Time, h.p.MemoryKiB, h.p.Threads, h.p.KeyLen)
	<-h.sem
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.p.MemoryKiB, h.p.Time, h.p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
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
