package auth

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// dump returns every key and value under r/auth/.
func dump(t *testing.T, db *badger.DB) map[string]string {
	t.Helper()
	return fsmtest.Dump(t, db, "r/auth/")
}

// TestHandlersRefuseWithoutWriting sends refused and malformed commands
// straight through the log and checks that nothing under r/auth/ changed.
func TestHandlersRefuseWithoutWriting(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	before := dump(t, e.db)
	ctx := context.Background()
	at := e.clock.Now()
	fam, _, _ := parseRefresh(tk.RefreshToken)

	raw := func(t byte, v any) error {
		b, _ := json.Marshal(v)
		_, err := e.prop.Propose(ctx, t, b)
		return err
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"dup account", raw(wire.CmdAccountCreate, accountCreateCmd{UID: "alice", Hash: "x", At: at}), ErrUsernameTaken},
		{"bad uid", raw(wire.CmdAccountCreate, accountCreateCmd{UID: "A B", Hash: "x", At: at}), errBadCommand},
		{"no hash", raw(wire.CmdAccountCreate, accountCreateCmd{UID: "zed", At: at}), errBadCommand},
		{"garbage create", func() error { _, err := e.prop.Propose(ctx, wire.CmdAccountCreate, []byte("{")); return err }(), errBadCommand},
		{"update unknown", raw(wire.CmdAccountUpdate, accountUpdateCmd{UID: "zed", At: at}), ErrNoAccount},
		{"rotate stale", raw(wire.CmdRefreshIssue, refreshIssueCmd{Family: fam, UID: "alice", Hash: "new", Prev: "stale", ExpiresAt: at.Add(time.Hour), At: at}), ErrRefreshReused},
		{"rotate other uid", raw(wire.CmdRefreshIssue, refreshIssueCmd{Family: fam, UID: "bob", Hash: "new", Prev: "stale", ExpiresAt: at.Add(time.Hour), At: at}), ErrRefreshInvalid},
		{"rotate unknown", raw(wire.CmdRefreshIssue, refreshIssueCmd{Family: "nope", UID: "alice", Hash: "new", Prev: "x", ExpiresAt: at.Add(time.Hour), At: at}), ErrRefreshInvalid},
		{"rotate expired", raw(wire.CmdRefreshIssue, refreshIssueCmd{Family: fam, UID: "alice", Hash: "new", Prev: "x", ExpiresAt: at.Add(time.Hour), At: at.Add(DefaultRefreshTTL)}), ErrRefreshInvalid},
		{"reissue family", raw(wire.CmdRefreshIssue, refreshIssueCmd{Family: fam, UID: "alice", Hash: "new", ExpiresAt: at.Add(time.Hour), At: at}), errBadCommand},
		{"revoke unknown", raw(wire.CmdRefreshRevoke, refreshRevokeCmd{Family: "nope", At: at}), ErrRefreshInvalid},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, c.err, c.want)
		}
	}
	if after := dump(t, e.db); !maps.Equal(before, after) {
		t.Fatalf("refused commands changed state:\nbefore %v\nafter  %v", before, after)
	}
	// The token still works: nothing was revoked by the refusals.
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); err != nil {
		t.Fatal(err)
	}
}

// TestReplayIsDeterministic applies the same log to two databases and
// compares the resulting state byte for byte.
func TestReplayIsDeterministic(t *testing.T) {
	e := newEnv(t)
	var log [][]byte
	var types []byte
	inner := e.prop
	rec := &recordingProposer{inner: inner, types: &types, log: &log}
	e.svc.proposer = rec
	e.register("alice", "password1")
	e.register("bob", "password2")
	tk := e.login("bob", "password2")
	if _, err := e.svc.Refresh(context.Background(), tk.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, _ = e.svc.Refresh(context.Background(), tk.RefreshToken) // reuse → revoke

	e2 := newEnv(t)
	for i := range log {
		_, _ = e2.prop.Propose(context.Background(), types[i], log[i])
	}
	a, b := dump(t, e.db), dump(t, e2.db)
	if len(a) < 3 || !maps.Equal(a, b) {
		t.Fatalf("replicas differ:\n%v\n%v", a, b)
	}
}

type recordingProposer struct {
	inner *fsmtest.Harness
	types *[]byte
	log   *[][]byte
}

func (r *recordingProposer) Propose(ctx context.Context, t byte, p []byte) (any, error) {
	*r.types = append(*r.types, t)
	*r.log = append(*r.log, append([]byte(nil), p...))
	return r.inner.Propose(ctx, t, p)
}
