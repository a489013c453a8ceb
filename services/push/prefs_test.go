package push

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

// Mutes and Settings (hence DND and Preview) answer from a cache (the
// push sender reads a user's mutes and do-not-disturb window for every
// message it decides): every change is seen by the next read, on the
// leader and on a follower: a mute, a new end of it, an unmute, a mute
// that runs out, a preview or do-not-disturb change, the account's
// erasure and a snapshot restore.
func TestMutesAndSettingsSeeEveryChangeThroughTheirCache(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	fsvc, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(step, uid, want string) {
		t.Helper()
		for i := range 2 { // the second read is the cache's
			for node, svc := range map[string]*Service{"leader": e.svc, "follower": fsvc} {
				if got := prefsOf(t, svc, uid, e.clock.Now()); got != want {
					t.Fatalf("%s: %s's mutes and settings on the %s (read %d):\n%s\nwant\n%s", step, uid, node, i+1, got, want)
				}
			}
		}
	}
	mute := func(conv string, until *time.Time) {
		t.Helper()
		if _, err := e.svc.Mute(ctx, "alice", conv, until); err != nil {
			t.Fatal(err)
		}
	}
	check("nothing set", "alice", "mutes [] preview full dnd off")
	mute("user:bob", nil)
	check("muted", "alice", "mutes [user:bob] preview full dnd off")
	soon := e.clock.Now().Add(time.Hour)
	mute("user:bob", &soon)
	check("mute's end set", "alice", "mutes [user:bob until 13:00] preview full dnd off")
	mute("group:g1", nil)
	check("second mute", "alice", "mutes [group:g1 user:bob until 13:00] preview full dnd off")
	e.clock.Advance(time.Hour)
	check("a mute ran out", "alice", "mutes [group:g1] preview full dnd off")
	if err := e.svc.Unmute(ctx, "alice", "group:g1"); err != nil {
		t.Fatal(err)
	}
	check("unmuted", "alice", "mutes [] preview full dnd off")
	if _, err := e.svc.SetPreview(ctx, "alice", PreviewNone); err != nil {
		t.Fatal(err)
	}
	check("preview", "alice", "mutes [] preview none dnd off")
	if _, err := e.svc.SetDND(ctx, "alice", &DND{From: 22 * time.Hour, To: 7 * time.Hour, UTCOffset: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check("dnd on", "alice", "mutes [] preview none dnd 22h0m0s-7h0m0s+1h0m0s")

	// A value handed out is the caller's: changing it changes no later read.
	later := e.clock.Now().Add(time.Hour)
	mute("user:dave", &later)
	prefsOf(t, e.svc, "alice", e.clock.Now()) // cached
	if st, err := e.svc.Settings("alice"); err != nil {
		t.Fatal(err)
	} else {
		st.DND.From = time.Hour
	}
	check("a caller changed its copy", "alice", "mutes [user:dave until 14:00] preview none dnd 22h0m0s-7h0m0s+1h0m0s")
	if ms, err := e.svc.Mutes("alice", e.clock.Now()); err != nil || len(ms) != 1 {
		t.Fatal(ms, err)
	} else {
		*ms[0].Until = ms[0].Until.Add(time.Hour)
	}
	check("a caller changed its copy of a mute", "alice", "mutes [user:dave until 14:00] preview none dnd 22h0m0s-7h0m0s+1h0m0s")
	if err := e.svc.Unmute(ctx, "alice", "user:dave"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetDND(ctx, "alice", nil); err != nil {
		t.Fatal(err)
	}
	check("dnd off", "alice", "mutes [] preview none dnd off")
	check("bob before", "bob", "mutes [] preview full dnd off")

	// An erasure step (auth's command) runs its after-commit function.
	mute("user:carol", nil)
	if _, err := e.svc.SetDND(ctx, "alice", &DND{From: time.Hour, To: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	check("before erasure", "alice", "mutes [user:carol] preview none dnd 1h0m0s-2h0m0s+0s")
	eraseOnEach(t, "alice", e.svc, fsvc)
	check("erased", "alice", "mutes [] preview full dnd off")

	// A restore replaces everything: a node whose state is behind the
	// snapshot takes it over what it has cached.
	if _, err := e.svc.Mute(ctx, "bob", "user:alice", nil); err != nil {
		t.Fatal(err)
	}
	snap := fsmtest.Snapshot(t, e.prop.FSM)
	other := newEnv(t)
	other.clock.Set(e.clock.Now())
	if _, err := other.svc.Mute(ctx, "carol", "user:dave", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := other.svc.SetPreview(ctx, "bob", PreviewSender); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"carol", "bob"} {
		prefsOf(t, other.svc, uid, other.clock.Now()) // cached
	}
	fsmtest.Restore(t, other.prop.FSM, snap)
	for uid, want := range map[string]string{"carol": "mutes [] preview full dnd off",
		"bob": "mutes [user:alice] preview full dnd off"} {
		if got := prefsOf(t, other.svc, uid, other.clock.Now()); got != want {
			t.Fatalf("after a restore: %s's mutes and settings %q, want %q", uid, got, want)
		}
	}
}

// prefsOf reads uid's mutes in force at `at`, preview and DND through the
// accessors the push sender and the API use, as one line.
func prefsOf(t *testing.T, svc *Service, uid string, at time.Time) string {
	t.Helper()
	ms, err := svc.Mutes(uid, at)
	if err != nil {
		t.Fatal(err)
	}
	var mutes []string
	for _, m := range ms {
		s := m.Conversation
		if m.Until != nil {
			s += " until " + m.Until.UTC().Format("15:04")
		}
		mutes = append(mutes, s)
	}
	slices.Sort(mutes)
	preview, err := svc.Preview(uid)
	if err != nil {
		t.Fatal(err)
	}
	dnd := "off"
	if from, to, off, ok, err := svc.DND(uid); err != nil {
		t.Fatal(err)
	} else if ok {
		dnd = fmt.Sprintf("%v-%v+%v", from, to, off)
	}
	return fmt.Sprintf("mutes [%s] preview %s dnd %s", strings.Join(mutes, " "), preview, dnd)
}
