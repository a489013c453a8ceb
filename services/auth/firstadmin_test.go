package auth

import (
	"context"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// The first account is the admin once: from feature level FirstAdminOnce
// an erased account of this region counts (not a user of another region
// erased here, who never had an account here); below it the earlier
// rule holds, as on a node of an earlier version applying the same log.
func TestFirstAdminOnceFromItsFeatureLevel(t *testing.T) {
	for _, level := range []uint32{0, featurelevel.FirstAdminOnce} {
		t.Run(fmt.Sprintf("level=%d", level), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.DeleteGrace = 0 })
			featurelevel.Register(e.prop.FSM)
			ctx := context.Background()
			if level > 0 {
				if _, err := e.prop.Propose(ctx, wire.CmdFeatureLevel, featurelevel.Payload(level)); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.svc.EraseRemote(ctx, "bob@us"); err != nil {
				t.Fatal(err)
			}
			e.svc.EraseDue(ctx)
			admin := func(uid string) bool {
				t.Helper()
				a, err := e.svc.LookupAccount(uid)
				if err != nil {
					t.Fatal(err)
				}
				return a.Admin
			}
			e.register("alice", "password1")
			if !admin("alice") {
				t.Fatal("alice, the first account (only bob@us erased before), is no admin")
			}
			if _, err := e.svc.DeleteAccountByAdmin(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			e.svc.EraseDue(ctx)
			if r, ok := e.svc.gone.get("alice"); !ok || r.ErasedAt == nil {
				t.Fatalf("alice not erased: %+v", r)
			}
			e.register("mallory", "password2")
			if got, want := admin("mallory"), level < featurelevel.FirstAdminOnce; got != want {
				t.Fatalf("mallory, after alice's erasure: admin %v, want %v", got, want)
			}
		})
	}
}
