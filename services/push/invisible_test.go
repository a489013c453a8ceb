package push

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// A device registered for push names its device ID anew: C1 controls,
// bidi controls and other invisible characters are refused (they end up
// in push payloads, logs and the web UI), as the broker refuses them in
// a CONNECT's client ID. A registration stored before the rule (a Raft
// log replayed, a node of an earlier version that proposed it during an
// upgrade) still applies, and its device can still be listed and
// removed.
func TestRegisterRefusesInvisibleDeviceButOldEntriesApply(t *testing.T) {
	e := newEnv(t)
	for _, dev := range []string{`phone\u0085`, `phone\u202e`, `\u200bphone`, `\u009b31m`} {
		body := `{"device":"` + dev + `","platform":"fcm","token":"` + fcmToken("x") + `"}`
		if r := e.do("POST", "/user/me/devices", body, "alice"); r.Code != 400 || r.errCode() != CodeInvalidDevice {
			t.Errorf("register device %s: %d %s, want 400 %s", dev, r.Code, r.Body, CodeInvalidDevice)
		}
	}
	if r := e.do("POST", "/user/me/devices", `{"device":"Alice's phone","platform":"fcm","token":"`+fcmToken("y")+`"}`, "alice"); r.Code != 200 {
		t.Fatalf("register a printable device: %d %s", r.Code, r.Body)
	}
	// An entry of an earlier version.
	old := "old\u0085phone"
	cmd := devicePutCmd{UID: "bob", Reg: Registration{Device: old, Platform: "fcm", Token: fcmToken("old")}, At: e.clock.Now()}
	if _, err := e.prop.Propose(context.Background(), wire.CmdPushDevicePut, []byte(mustJSON(t, cmd))); err != nil {
		t.Fatalf("a registration stored before the rule no longer applies: %v", err)
	}
	if r := e.do("GET", "/user/me/devices", "", "bob"); r.Code != 200 || !strings.Contains(string(r.Body), old) {
		t.Fatalf("bob's devices: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/devices/"+url.PathEscape(old), "", "bob"); r.Code != 204 {
		t.Fatalf("remove the old device: %d %s", r.Code, r.Body)
	}
}
