package push

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
)

func TestEraseAccountRemovesDevicesMutesSettingsOptIns(t *testing.T) {
	e := newEnv(t, PlatformFCM, PlatformAPNs)
	ctx := context.Background()
	for _, r := range []struct {
		uid string
		reg Registration
	}{
		{"bob", Registration{Device: "pixel", Platform: PlatformFCM, Token: fcmToken("b1")}},
		{"bob", Registration{Device: "iphone", Platform: PlatformAPNs, Token: apnsToken("b2")}},
		{"alice", Registration{Device: "pixel", Platform: PlatformFCM, Token: fcmToken("a1")}},
	} {
		if _, err := e.svc.Register(ctx, r.uid, r.reg); err != nil {
			t.Fatal(err)
		}
	}
	for _, uid := range []string{"bob", "alice"} {
		if _, err := e.svc.Mute(ctx, uid, "group:g1", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.OptIn(ctx, uid, "g1"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.SetPreview(ctx, uid, PreviewNone); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.Mute(ctx, "bob", "user:alice", nil); err != nil {
		t.Fatal(err)
	}
	aliceBefore := map[string]string{}
	for k, v := range e.state() {
		if !strings.Contains(k, "bob") && (strings.Contains(k, "alice") || strings.Contains(v, "alice/")) {
			aliceBefore[k] = v
		}
	}

	steps := 0
	for done := false; !done; steps++ {
		tx := e.prop.DB.NewTransaction(true)
		var err error
		if done, _, err = e.svc.EraseAccount(tx, "bob", fsm.NewBudget(1)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if steps < 4 {
		t.Fatalf("a budget of 1 took %d steps", steps)
	}
	for k, v := range e.state() {
		if strings.Contains(k, "bob") || strings.Contains(v, "bob/") || strings.Contains(v, `"bob"`) {
			t.Errorf("left: %s = %s", k, v)
		}
	}
	for k, v := range aliceBefore {
		if e.state()[k] != v {
			t.Errorf("alice's %s changed", k)
		}
	}
	if _, err := e.svc.DeviceByToken(PlatformFCM, fcmToken("b1")); err == nil {
		t.Fatal("bob's token still finds a device")
	}
	if p, _ := e.svc.Preview("alice"); p != PreviewNone {
		t.Fatalf("alice's preview: %q", p)
	}
	if muted, _ := e.svc.IsMuted("alice", "group:g1", time.Now()); !muted {
		t.Fatal("alice's mute went")
	}
}
