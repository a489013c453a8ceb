package push

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestNormalize(t *testing.T) {
	good := subscription(t, "https://fcm.googleapis.com/fcm/send/abc")
	padded := *good
	padded.Keys.Auth += "=="
	notOnCurve := *good
	notOnCurve.Keys.P256dh = base64Point(65, 4)
	compressed := *good
	compressed.Keys.P256dh = base64Point(33, 2)
	shortAuth := *good
	shortAuth.Keys.Auth = "AAAA"
	httpEP := *good
	httpEP.Endpoint = "http://push.example.com/x"
	userinfo := *good
	userinfo.Endpoint = "https://u:p@push.example.com/x"
	longEP := *good
	longEP.Endpoint = "https://push.example.com/" + strings.Repeat("a", MaxEndpoint)
	for _, tc := range []struct {
		name string
		reg  Registration
		want error
	}{
		{"apns", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a"), AppID: "com.example.chat"}, nil},
		{"apns upper hex", Registration{Device: "phone", Platform: "apns", Token: strings.ToUpper(apnsToken("a"))}, nil},
		{"apns 200", Registration{Device: "phone", Platform: "apns", Token: strings.Repeat("ab", 100)}, nil},
		{"apns too short", Registration{Device: "phone", Platform: "apns", Token: strings.Repeat("ab", 31)}, ErrInvalidToken},
		{"apns too long", Registration{Device: "phone", Platform: "apns", Token: strings.Repeat("ab", 101)}, ErrInvalidToken},
		{"apns odd", Registration{Device: "phone", Platform: "apns", Token: strings.Repeat("a", 65)}, ErrInvalidToken},
		{"apns not hex", Registration{Device: "phone", Platform: "apns", Token: strings.Repeat("g", 64)}, ErrInvalidToken},
		{"apns bad appId", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a"), AppID: "com/x"}, ErrInvalidToken},
		{"apns with subscription", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a"), Subscription: good}, ErrInvalidToken},
		{"fcm", Registration{Device: "pixel", Platform: "fcm", Token: fcmToken("a")}, nil},
		{"fcm short", Registration{Device: "pixel", Platform: "fcm", Token: "abc"}, ErrInvalidToken},
		{"fcm charset", Registration{Device: "pixel", Platform: "fcm", Token: fcmToken("a") + " x"}, ErrInvalidToken},
		{"fcm long", Registration{Device: "pixel", Platform: "fcm", Token: strings.Repeat("a", MaxFCMToken+1)}, ErrInvalidToken},
		{"fcm sandbox", Registration{Device: "pixel", Platform: "fcm", Token: fcmToken("a"), Sandbox: true}, ErrInvalidToken},
		{"webpush", Registration{Device: "browser-1", Platform: "webpush", Subscription: good}, nil},
		{"webpush padded", Registration{Device: "browser-1", Platform: "webpush", Subscription: &padded}, nil},
		{"webpush none", Registration{Device: "browser-1", Platform: "webpush"}, ErrInvalidSubscription},
		{"webpush token", Registration{Device: "browser-1", Platform: "webpush", Token: "x", Subscription: good}, ErrInvalidSubscription},
		{"webpush http", Registration{Device: "b", Platform: "webpush", Subscription: &httpEP}, ErrInvalidSubscription},
		{"webpush userinfo", Registration{Device: "b", Platform: "webpush", Subscription: &userinfo}, ErrInvalidSubscription},
		{"webpush long", Registration{Device: "b", Platform: "webpush", Subscription: &longEP}, ErrInvalidSubscription},
		{"webpush off curve", Registration{Device: "b", Platform: "webpush", Subscription: &notOnCurve}, ErrInvalidSubscription},
		{"webpush compressed", Registration{Device: "b", Platform: "webpush", Subscription: &compressed}, ErrInvalidSubscription},
		{"webpush auth", Registration{Device: "b", Platform: "webpush", Subscription: &shortAuth}, ErrInvalidSubscription},
		{"no device", Registration{Platform: "fcm", Token: fcmToken("a")}, ErrInvalidDevice},
		{"device slash", Registration{Device: "a/b", Platform: "fcm", Token: fcmToken("a")}, ErrInvalidDevice},
		{"device plus", Registration{Device: "a+", Platform: "fcm", Token: fcmToken("a")}, ErrInvalidDevice},
		{"device long", Registration{Device: strings.Repeat("d", 65), Platform: "fcm", Token: fcmToken("a")}, ErrInvalidDevice},
		{"device control", Registration{Device: "a\x01", Platform: "fcm", Token: fcmToken("a")}, ErrInvalidDevice},
		{"platform", Registration{Device: "x", Platform: "gcm", Token: fcmToken("a")}, ErrInvalidPlatform},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.reg.Normalize()
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Normalize: %v, want %v", err, tc.want)
			}
			if err == nil {
				again, err := got.Normalize()
				if err != nil || mustJSON(t, again) != mustJSON(t, got) {
					t.Fatalf("not idempotent: %+v -> %+v (%v)", got, again, err)
				}
			}
		})
	}
}

// base64Point is an n-byte "point" with the given first byte that is
// not on the curve.
func base64Point(n int, first byte) string {
	b := make([]byte, n)
	b[0] = first
	b[n-1] = 1
	return encodeB64(b)
}

func TestConversationAndPreview(t *testing.T) {
	for conv, ok := range map[string]bool{"user:alice": true, "group:G_1-x": true, "user:A": false, "group:": false,
		"alice": false, "group:a/b": false, "channel:x": false, "user:alice@eu": true, "group:k3x9@eu": true,
		"user:alice@": false, "user:@eu": false, "user:alice@eu@us": false, "user:alice@-eu": false, "user:A@eu": false} {
		if err := ValidConversation(conv); (err == nil) != ok {
			t.Errorf("ValidConversation(%q) = %v", conv, err)
		}
	}
	for p, ok := range map[string]bool{"full": true, "sender": true, "none": true, "": false, "FULL": false} {
		if err := ValidPreview(p); (err == nil) != ok {
			t.Errorf("ValidPreview(%q) = %v", p, err)
		}
	}
}

// A phone that changes hands: bob registers the token alice had, in one
// command that removes alice's registration and gives bob the token.
func TestTokenMovesBetweenUsers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := apnsToken("phone")
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "phone", Platform: "apns", Token: tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "pixel", Platform: "fcm", Token: fcmToken("a")}); err != nil {
		t.Fatal(err)
	}
	before := e.prop.Index()
	d, err := e.svc.Register(ctx, "bob", Registration{Device: "iphone", Platform: "apns", Token: strings.ToUpper(tok)})
	if err != nil {
		t.Fatal(err)
	}
	if e.prop.Index() != before+1 {
		t.Fatalf("the move took %d entries, want 1", e.prop.Index()-before)
	}
	if d.UserID != "bob" || d.Token != tok {
		t.Fatalf("registered %+v", d)
	}
	got, err := e.svc.DeviceByToken("apns", tok)
	if err != nil || got.ClientID() != "bob/iphone" {
		t.Fatalf("DeviceByToken = %+v, %v", got, err)
	}
	alice, _ := e.svc.Devices("alice")
	if len(alice) != 1 || alice[0].Device != "pixel" {
		t.Fatalf("alice's devices %+v", alice)
	}
	// A device that changes its token releases the old one.
	if _, err := e.svc.Register(ctx, "bob", Registration{Device: "iphone", Platform: "apns", Token: apnsToken("new")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeviceByToken("apns", tok); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("old token still held: %v", err)
	}
	// The same token under another device name of the same user moves too.
	if _, err := e.svc.Register(ctx, "bob", Registration{Device: "iphone-2", Platform: "apns", Token: apnsToken("new")}); err != nil {
		t.Fatal(err)
	}
	bob, _ := e.svc.Devices("bob")
	if len(bob) != 1 || bob[0].Device != "iphone-2" {
		t.Fatalf("bob's devices %+v", bob)
	}
	// Exactly the keys of the three live registrations remain.
	st := e.state()
	if len(st) != 4 { // 2 devices + 2 token keys
		t.Fatalf("state has %d keys: %v", len(st), st)
	}
}

func TestRegisterRefreshKeepsCreatedAt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := Registration{Device: "phone", Platform: "apns", Token: apnsToken("a"), Sandbox: true}
	first, err := e.svc.Register(ctx, "alice", reg)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	e.prop.LoseValues(true) // a forwarded proposal: read back
	again, err := e.svc.Register(ctx, "alice", reg)
	if err != nil {
		t.Fatal(err)
	}
	if !again.CreatedAt.Equal(first.CreatedAt) || !again.UpdatedAt.Equal(first.UpdatedAt.Add(time.Hour)) || !again.Sandbox {
		t.Fatalf("refresh: %+v after %+v", again, first)
	}
}

func TestDisabledPlatform(t *testing.T) {
	e := newEnv(t, PlatformFCM)
	_, err := e.svc.Register(context.Background(), "alice", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a")})
	if !errors.Is(err, ErrDisabled) {
		t.Fatalf("got %v", err)
	}
	if r := e.do("GET", "/push/vapid", "", ""); r.Code != 409 || r.errCode() != CodePushDisabled {
		t.Fatalf("vapid with web push off: %d %s", r.Code, r.Body)
	}
}

func TestTooManyDevicesWritesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < MaxDevices; i++ {
		if _, err := e.svc.Register(ctx, "alice", Registration{Device: "d" + string(rune('a'+i)), Platform: "fcm", Token: fcmToken(string(rune('a' + i)))}); err != nil {
			t.Fatal(err)
		}
	}
	before := e.state()
	_, err := e.svc.Register(ctx, "alice", Registration{Device: "one-more", Platform: "fcm", Token: fcmToken("zz")})
	if !errors.Is(err, ErrTooManyDevices) {
		t.Fatalf("got %v", err)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("a refused registration changed the state")
	}
	// Taking over the token of one of the user's own devices is fine.
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "renamed", Platform: "fcm", Token: fcmToken("a")}); err != nil {
		t.Fatal(err)
	}
}

func TestUnregisterAndRemoveToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sub := subscription(t, "https://push.example.com/ep/1")
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "browser", Platform: "webpush", Subscription: sub}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "phone", Platform: "apns", Token: apnsToken("p")}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RemoveToken(ctx, "bob", "webpush", sub.Endpoint); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("removing another user's token: %v", err)
	}
	if err := e.svc.RemoveToken(ctx, "", "webpush", sub.Endpoint); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Unregister(ctx, "alice", "phone"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Unregister(ctx, "alice", "phone"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("second unregister: %v", err)
	}
	if err := e.svc.RemoveDeviceOnLogout(ctx, "alice", "phone"); err != nil {
		t.Fatalf("logout of an unregistered device: %v", err)
	}
	if st := e.state(); len(st) != 0 {
		t.Fatalf("left behind: %v", st)
	}
}

// A direct conversation with a user of another region is pushed as
// "user:alice@eu" (bridge/push ConversationFor): the recipient can mute
// it under that name.
func TestADirectConversationWithAUserOfAnotherRegionCanBeMuted(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Mute(context.Background(), "bob", "user:alice@eu", nil); err != nil {
		t.Fatalf("muting the direct conversation with a user of another region: %v", err)
	}
	if r := e.do("PUT", "/user/me/mutes/user:carol@eu", "", "bob"); r.Code != 200 {
		t.Fatalf("PUT /user/me/mutes/user:carol@eu = %d %s", r.Code, r.Body)
	}
	for _, conv := range []string{"user:alice@eu", "user:carol@eu"} {
		if muted, err := e.svc.IsMuted("bob", conv, e.clock.Now()); err != nil || !muted {
			t.Errorf("IsMuted(bob, %s) = %v, %v", conv, muted, err)
		}
	}
	if muted, _ := e.svc.IsMuted("bob", "user:alice", e.clock.Now()); muted {
		t.Error("muting alice@eu muted the local alice")
	}
}

func TestMutes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clock.Now()
	until := now.Add(time.Hour)
	if _, err := e.svc.Mute(ctx, "alice", "group:g1", &until); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Mute(ctx, "alice", "user:bob", nil); err != nil {
		t.Fatal(err)
	}
	past := now.Add(-time.Second)
	if _, err := e.svc.Mute(ctx, "alice", "user:carol", &past); !errors.Is(err, ErrInvalidUntil) {
		t.Fatalf("mute until the past: %v", err)
	}
	for _, tc := range []struct {
		conv string
		at   time.Time
		want bool
	}{
		{"group:g1", now, true},
		{"group:g1", until, false},
		{"user:bob", now.Add(1000 * time.Hour), true},
		{"user:carol", now, false},
		{"group:g2", now, false},
	} {
		if got, err := e.svc.IsMuted("alice", tc.conv, tc.at); err != nil || got != tc.want {
			t.Errorf("IsMuted(%s, %v) = %v, %v", tc.conv, tc.at, got, err)
		}
	}
	ms, _ := e.svc.Mutes("alice", until)
	if len(ms) != 1 || ms[0].Conversation != "user:bob" {
		t.Fatalf("mutes in force at %v: %+v", until, ms)
	}
	if err := e.svc.Unmute(ctx, "alice", "user:bob"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Unmute(ctx, "alice", "user:bob"); err != nil {
		t.Fatalf("unmuting twice: %v", err)
	}
	if muted, _ := e.svc.IsMuted("alice", "user:bob", now); muted {
		t.Fatal("still muted")
	}
	// A new mute after group:g1's ended clears it from the store.
	e.clock.Advance(2 * time.Hour)
	if _, err := e.svc.Mute(ctx, "alice", "user:dave", nil); err != nil {
		t.Fatal(err)
	}
	if st := e.state(); len(st) != 1 || st["r/push/m/alice/user:dave"] == "" {
		t.Fatalf("mutes stored: %v", st)
	}
}

func TestMuteCapCountsOnlyMutesInForce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	until := e.clock.Now().Add(time.Minute)
	for i := 0; i < MaxMutes; i++ {
		u := &until
		if i%2 == 0 {
			u = nil
		}
		if _, err := e.svc.Mute(ctx, "alice", GroupConversation(fmt.Sprintf("g%d", i)), u); err != nil {
			t.Fatal(err)
		}
	}
	before := e.state()
	if _, err := e.svc.Mute(ctx, "alice", "group:more", nil); !errors.Is(err, ErrTooManyMutes) {
		t.Fatalf("over the cap: %v", err)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("a refused mute changed the state")
	}
	e.clock.Advance(time.Minute) // half of them end
	if _, err := e.svc.Mute(ctx, "alice", "group:more", nil); err != nil {
		t.Fatalf("after half ended: %v", err)
	}
	if ms, _ := e.svc.Mutes("alice", e.clock.Now()); len(ms) != MaxMutes/2+1 {
		t.Fatalf("%d mutes in force", len(ms))
	}
}

func TestPreview(t *testing.T) {
	e := newEnv(t)
	if p, err := e.svc.Preview("alice"); err != nil || p != PreviewFull {
		t.Fatalf("default preview %q, %v", p, err)
	}
	if _, err := e.svc.SetPreview(context.Background(), "alice", PreviewNone); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Preview("alice"); p != PreviewNone {
		t.Fatalf("preview %q", p)
	}
	if _, err := e.svc.SetPreview(context.Background(), "alice", "all"); !errors.Is(err, ErrInvalidPreview) {
		t.Fatalf("got %v", err)
	}
}

// The first VAPID key applied wins; a node that proposes later keeps it.
func TestVAPIDFirstProposalWins(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	other, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.VAPIDKeys(); !errors.Is(err, ErrNoVAPIDKey) {
		t.Fatalf("before: %v", err)
	}
	if err := e.svc.EnsureVAPID(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := e.svc.VAPIDKeys()
	if err != nil || len(pub) != 87 || len(priv) != 43 {
		t.Fatalf("keys %q %q %v", pub, priv, err)
	}
	// A racing node's proposal is applied after: ignored.
	c, _ := newVAPID()
	v, err := e.prop.Propose(context.Background(), 0x54, []byte(mustJSON(t, c)))
	if err != nil || v.(vapidCmd).Public != pub {
		t.Fatalf("second proposal: %v %v", v, err)
	}
	if p2, _, _ := other.VAPIDKeys(); p2 != pub {
		t.Fatalf("follower key %q, leader %q", p2, pub)
	}
	if r := e.do("GET", "/push/vapid", "", ""); r.Code != 200 || !strings.Contains(string(r.Body), pub) {
		t.Fatalf("GET /push/vapid: %d %s", r.Code, r.Body)
	}
	// A malformed first key is refused.
	e2 := newEnv(t)
	bad := vapidCmd{Private: c.Private, Public: pub}
	if _, err := e2.prop.Propose(context.Background(), 0x54, []byte(mustJSON(t, bad))); !errors.Is(err, errBadCommand) {
		t.Fatalf("mismatched pair: %v", err)
	}
}

func TestSnapshotRestoreKeepsRegistrations(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Register(ctx, "alice", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Mute(ctx, "alice", "group:g", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.EnsureVAPID(ctx); err != nil {
		t.Fatal(err)
	}
	snap := fsmtest.Snapshot(t, e.prop.FSM)
	want := e.state()

	other := fsmtest.New(t)
	svc, err := New(Deps{DB: other.DB, Proposer: other, FSM: other.FSM, Enabled: Platforms()})
	if err != nil {
		t.Fatal(err)
	}
	fsmtest.Restore(t, other.FSM, snap)
	if got := fsmtest.Dump(t, other.DB, "r/push/"); !maps.Equal(got, want) {
		t.Fatalf("restored %v, want %v", got, want)
	}
	if d, err := svc.DeviceByToken("apns", apnsToken("a")); err != nil || d.ClientID() != "alice/phone" {
		t.Fatalf("after restore: %+v %v", d, err)
	}
	// The restored node goes on from the snapshot: a move still works.
	other.SetIndex(e.prop.Index())
	if _, err := svc.Register(ctx, "bob", Registration{Device: "phone", Platform: "apns", Token: apnsToken("a")}); err != nil {
		t.Fatal(err)
	}
	if ds, _ := svc.Devices("alice"); len(ds) != 0 {
		t.Fatalf("alice kept %+v", ds)
	}
}

func TestHTTP(t *testing.T) {
	e := newEnv(t)
	tok := apnsToken("http")
	r := e.do("POST", "/user/me/devices", `{"device":"phone","platform":"apns","token":"`+tok+`","appId":"com.example.chat","sandbox":false}`, "alice")
	if r.Code != 200 || strings.Contains(string(r.Body), tok) {
		t.Fatalf("register: %d %s", r.Code, r.Body)
	}
	for _, tc := range []struct{ body, code string }{
		{`{"device":"phone","platform":"apns","token":"xyz"}`, CodeInvalidPushToken},
		{`{"device":"a/b","platform":"fcm","token":"` + fcmToken("x") + `"}`, CodeInvalidDevice},
		{`{"device":"p","platform":"sms","token":"x"}`, CodeInvalidPlatform},
		{`{"device":"b","platform":"webpush","subscription":{"endpoint":"http://x/y","keys":{"p256dh":"","auth":""}}}`, CodeInvalidSubscription},
		{`{"device":"p","platform":"apns","token":"` + tok + `","extra":1}`, "unknown_field"},
	} {
		if r := e.do("POST", "/user/me/devices", tc.body, "alice"); r.Code != 400 || r.errCode() != tc.code {
			t.Errorf("%s: %d %s, want %s", tc.body, r.Code, r.Body, tc.code)
		}
	}
	if r := e.do("GET", "/user/me/devices", "", "alice"); r.Code != 200 || !strings.Contains(string(r.Body), `"tokenSuffix":"`+tok[56:]+`"`) {
		t.Fatalf("list: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/devices/phone", "", "alice"); r.Code != 204 {
		t.Fatalf("delete: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/devices/phone", "", "alice"); r.Code != 404 {
		t.Fatalf("delete again: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/group:g1", "", "alice"); r.Code != 200 {
		t.Fatalf("mute: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/user:bob", `{"until":"2026-03-01T13:00:00Z"}`, "alice"); r.Code != 200 {
		t.Fatalf("mute until: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/user:bob", `{"until":"2020-03-01T13:00:00Z"}`, "alice"); r.Code != 400 || r.errCode() != "validation_failed" {
		t.Fatalf("mute until the past: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/user:bob", `{"until":"2026-03-01T13:00:00Z","x":1}`, "alice"); r.Code != 400 || r.errCode() != "unknown_field" {
		t.Fatalf("mute with an unknown field: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/user:bob", `{"until":"`+strings.Repeat(" ", 2000)+`"}`, "alice"); r.Code != 413 {
		t.Fatalf("mute with a large body: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/mutes/bob", "", "alice"); r.Code != 400 || r.errCode() != CodeInvalidConversation {
		t.Fatalf("bad conversation: %d %s", r.Code, r.Body)
	}
	if r := e.do("GET", "/user/me/mutes", "", "alice"); r.Code != 200 || !strings.Contains(string(r.Body), `"conversation":"user:bob","until":"2026-03-01T13:00:00Z"`) {
		t.Fatalf("mutes: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/mutes/group:g1", "", "alice"); r.Code != 204 {
		t.Fatalf("unmute: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/push", `{"preview":"sender"}`, "alice"); r.Code != 200 || !strings.Contains(string(r.Body), `"preview":"sender"`) {
		t.Fatalf("settings: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/push", `{"preview":"most"}`, "alice"); r.Code != 400 || r.errCode() != CodeInvalidPreview {
		t.Fatalf("bad preview: %d %s", r.Code, r.Body)
	}
	if r := e.do("GET", "/user/me/push", "", "alice"); r.Code != 200 || !strings.Contains(string(r.Body), `"platforms":["apns","fcm","webpush"]`) {
		t.Fatalf("get settings: %d %s", r.Code, r.Body)
	}
	if r := e.do("GET", "/push/vapid", "", ""); r.Code != 503 {
		t.Fatalf("vapid before the key: %d %s", r.Code, r.Body)
	}
	if r := e.do("GET", "/user/me/devices", "", ""); r.Code != 401 {
		t.Fatalf("no principal: %d", r.Code)
	}
}

// Handlers re-validate: a command that bypassed the service's checks
// is refused and writes nothing, on the leader and on a follower.
func TestHandlersRevalidate(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	if _, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		typ     byte
		payload string
		want    error
	}{
		{0x50, `{"uid":"alice","reg":{"device":"p","platform":"apns","token":"zz"}}`, ErrInvalidToken},
		{0x50, `{"uid":"A!","reg":{"device":"p","platform":"fcm","token":"` + fcmToken("a") + `"}}`, errBadCommand},
		{0x50, `not json`, errBadCommand},
		{0x51, `{"uid":"alice","device":"a/b"}`, errBadCommand},
		{0x52, `{"uid":"alice","conv":"nobody"}`, ErrInvalidConversation},
		{0x53, `{"uid":"alice","preview":"loud"}`, ErrInvalidPreview},
		{0x54, `{"private":"xx","public":"yy"}`, errBadCommand},
	} {
		if _, err := e.prop.Propose(ctx, tc.typ, []byte(tc.payload)); !errors.Is(err, tc.want) {
			t.Errorf("%#x %s: %v, want %v", tc.typ, tc.payload, err, tc.want)
		}
	}
	if st := e.state(); len(st) != 0 {
		t.Fatalf("refused commands wrote %v", st)
	}
	if st := fsmtest.Dump(t, f.DB(), "r/push/"); len(st) != 0 {
		t.Fatalf("refused commands wrote on the follower: %v", st)
	}
}

// Two users register one token in the same entry: the later command
// sees the earlier one's write and takes the token; replicas agree.
func TestTokenMoveWithinOneBatch(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	if _, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f}); err != nil {
		t.Fatal(err)
	}
	tok := fcmToken("batch")
	var cmds []fsm.Command
	for _, uid := range []string{"alice", "bob"} {
		cmds = append(cmds, fsm.Command{Type: wire.CmdPushDevicePut,
			Payload: []byte(mustJSON(t, devicePutCmd{UID: uid, Reg: Registration{Device: "pixel", Platform: "fcm", Token: tok}, At: e.clock.Now()}))})
	}
	res, err := e.prop.ProposeBatch(context.Background(), cmds)
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if moved := res[1].Value.(putResult).Moved; len(moved) != 1 || moved[0] != "alice/pixel" {
		t.Fatalf("moved %v", moved)
	}
	if d, err := e.svc.DeviceByToken("fcm", tok); err != nil || d.UserID != "bob" {
		t.Fatalf("holder %+v %v", d, err)
	}
	if want, got := e.state(), fsmtest.Dump(t, f.DB(), "r/push/"); !maps.Equal(want, got) || len(want) != 2 {
		t.Fatalf("leader %v, follower %v", want, got)
	}
}
