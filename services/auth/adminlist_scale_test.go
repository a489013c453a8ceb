package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// createAccounts makes n accounts user00000... through the log (no
// password hashing).
func createAccounts(t testing.TB, e *env, n int) {
	t.Helper()
	for i := range n {
		b, _ := json.Marshal(accountCreateCmd{UID: fmt.Sprintf("user%05d", i), Hash: "h", At: e.clock.Now()})
		if _, err := e.prop.Propose(context.Background(), wire.CmdAccountCreate, b); err != nil {
			t.Fatal(err)
		}
	}
}

// The suspended accounts, page by page, are those of the whole list that
// are suspended, in the same order, with the same cursors' meaning (a
// deleted one left out), read from the suspension records.
func TestSuspendedAccountsPageAsTheWholeList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	createAccounts(t, e, 60)
	var want []string
	for i := 0; i < 60; i += 7 {
		uid := fmt.Sprintf("user%05d", i)
		if err := e.svc.SetSuspended(ctx, uid, true); err != nil {
			t.Fatal(err)
		}
		want = append(want, uid)
	}
	// One suspended, then deleted; one suspended, then reinstated.
	if _, err := e.svc.DeleteAccountByAdmin(ctx, want[2]); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetSuspended(ctx, want[4], false); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 4, 5)
	want = slices.Delete(want, 2, 3)
	for _, limit := range []int{1, 2, 3, 100} {
		var got []string
		after := ""
		for range 100 {
			list, next, err := e.svc.Accounts(after, limit, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range list {
				if !a.Suspended {
					t.Fatalf("%s listed as not suspended", a.UserID)
				}
				got = append(got, a.UserID)
			}
			if next == "" {
				break
			}
			after = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: suspended %v, want %v", limit, got, want)
		}
	}
}

// BenchmarkSuspendedAccountsPage: GET /admin/users?suspended=true among
// 20,000 accounts, 3 of them suspended: the page read every account.
func BenchmarkSuspendedAccountsPage(b *testing.B) {
	e := newEnv(b)
	createAccounts(b, e, 20000)
	for _, uid := range []string{"user00005", "user10000", "user19999"} {
		if err := e.svc.SetSuspended(context.Background(), uid, true); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if list, _, err := e.svc.Accounts("", defaultAccountPage, true); err != nil || len(list) != 3 {
			b.Fatal(len(list), err)
		}
	}
}
