package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func mustExist(t *testing.T, s *Service, uid string, want bool) {
	t.Helper()
	ok, err := s.UserExists(uid)
	if err != nil || ok != want {
		t.Fatalf("UserExists(%q) = %v, %v; want %v", uid, ok, err, want)
	}
}

// UserExists caches only accounts that exist: a "no" is asked of the
// database every time, so an account created later is seen at once.
func TestUserExistsCache(t *testing.T) {
	e := newEnv(t)
	mustExist(t, e.svc, "alice", false)
	mustExist(t, e.svc, "Not-A-Uid!", false)
	if n := e.svc.exists.len(); n != 0 {
		t.Fatalf("%d entries cached before any account exists", n)
	}
	e.register("alice", "password1")
	mustExist(t, e.svc, "alice", true)
	if n := e.svc.exists.len(); n != 1 {
		t.Fatalf("%d entries cached, want alice", n)
	}
	// A cached answer does not read the database: change the database
	// under the cache (no command does this) and the cache still answers.
	if err := e.db.DropPrefix([]byte(prefixAccount)); err != nil {
		t.Fatal(err)
	}
	mustExist(t, e.svc, "alice", true)
	mustExist(t, e.svc, "bob", false)
}

// A snapshot restore replaces the state: accounts that the snapshot does
// not have no longer exist, whatever was cached.
func TestUserExistsAfterRestore(t *testing.T) {
	other := newEnv(t)
	other.register("alice", "password1")
	other.register("carol", "password1")
	snap := fsmtest.Snapshot(t, other.prop.FSM)
	e := newEnv(t)
	e.register("bob", "password1")
	mustExist(t, e.svc, "bob", true)
	fsmtest.Restore(t, e.prop.FSM, snap)
	mustExist(t, e.svc, "bob", false)
	mustExist(t, e.svc, "alice", true)
}

// A lookup that read the database before a restore does not cache what
// it read.
func TestExistsCacheFencesRestore(t *testing.T) {
	c := newExistsCache(10)
	_, gen := c.has("alice")
	c.purge()
	c.add("alice", gen)
	if ok, _ := c.has("alice"); ok {
		t.Fatal("a lookup from before the purge was cached")
	}
	_, gen = c.has("alice")
	c.add("alice", gen)
	if ok, _ := c.has("alice"); !ok {
		t.Fatal("not cached")
	}
}

// The cache stays within its bound, and evicted users still exist.
func TestExistsCacheBounded(t *testing.T) {
	e := newEnv(t)
	e.svc.exists = newExistsCache(2)
	for i := range 4 {
		e.register(fmt.Sprintf("user%d", i), "password1")
	}
	for range 2 {
		for i := range 4 {
			mustExist(t, e.svc, fmt.Sprintf("user%d", i), true)
			if n := e.svc.exists.len(); n > 2 {
				t.Fatalf("%d entries cached, bound 2", n)
			}
		}
	}
}

// BenchmarkUserExists: the recipient check of every direct message,
// from the cache, with a key lookup (a cache miss), and as it was before
// the cache (the account read and decoded).
func BenchmarkUserExists(b *testing.B) {
	prop := fsmtest.New(b)
	s, err := New(Config{KeyDir: b.TempDir() + "/keys", Argon2: tinyArgon}, Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := s.propose(context.Background(), wire.CmdAccountCreate, accountCreateCmd{UID: fmt.Sprintf("user%d", i), Hash: "h", At: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := s.UserExists("user500"); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.exists.purge()
			if ok, err := s.UserExists("user500"); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.readAccount("user500"); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
}
