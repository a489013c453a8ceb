package node_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// pushMocks are the three mock providers a node is configured for.
type pushMocks struct {
	apns *pushtest.APNs
	fcm  *pushtest.FCM
}

// apnsPushes counts the APNs requests to token that carry message id.
func (m pushMocks) apnsPushes(token, id string) int {
	return m.apns.Count(func(r *pushtest.APNsRequest) bool { return r.Token == token && r.Custom["messageId"] == id })
}

// withPushMocks configures every provider against the mocks: APNs token
// auth with a new .p8 key, FCM with the mock's service account, Web Push
// with a subject (the mock is started later, with the node's key). The
// mocks share httptest's certificate, which PushTLS trusts.
func withPushMocks(t testing.TB) (nodetest.Option, pushMocks) {
	keyPEM, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	const keyID, teamID = "KEY1234567", "TEAM123456"
	m := pushMocks{
		apns: pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: keyID, TeamID: teamID}),
		fcm:  pushtest.StartFCM(t, pushtest.FCMOptions{}),
	}
	dir := t.TempDir()
	keyFile, creds := filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "fcm.json")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(creds, m.fcm.ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	return nodetest.WithConfig(func(c *node.Config) {
		c.APNsKeyFile, c.APNsKeyID, c.APNsTeamID = keyFile, keyID, teamID
		c.APNsTopic = "com.example.chat"
		c.APNsEndpoint = m.apns.URL
		c.FCMCredentialsFile = creds
		c.FCMEndpoint = m.fcm.URL
		c.WebPushSubject = "mailto:ops@example.com"
		c.PushPrivateEndpoints = true // the mock push service listens on 127.0.0.1
		c.PushTLS = m.apns.TLSConfig()
	}), m
}

type pushTestAnswer struct {
	Results []pushbridge.TestResult `json:"results"`
}

func TestPushTestRouteSendsThroughEveryProvider(t *testing.T) {
	opt, m := withPushMocks(t)
	n := nodetest.StartNode(t, opt)
	rootTok := n.NewUser(t, "root") // the first account is the admin
	aliceTok := n.NewUser(t, "alice")
	var vapid string
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if vapid = vapidKey(t, n); vapid == "" {
			return os.ErrNotExist
		}
		return nil
	})
	wp := pushtest.StartWebPush(t, vapid)
	sub := wp.Subscribe()

	phone, oldPhone, pixel := pushtest.NewDeviceToken(), pushtest.NewDeviceToken(), fcmToken("e2e")
	m.apns.Fail(oldPhone, pushtest.Unregistered)
	for _, reg := range []map[string]any{
		{"device": "phone", "platform": "apns", "token": phone},
		{"device": "old-phone", "platform": "apns", "token": oldPhone},
		{"device": "pixel", "platform": "fcm", "token": pixel},
		{"device": "browser", "platform": "webpush", "subscription": map[string]any{"endpoint": sub.Endpoint,
			"keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}},
	} {
		if st := api(t, n, aliceTok, "POST", "/user/me/devices", reg, nil); st != 200 {
			t.Fatalf("register %v: %d", reg["device"], st)
		}
	}

	// Admins only.
	if st := api(t, n, aliceTok, "POST", "/admin/push/test/alice", nil, nil); st != 403 {
		t.Fatalf("a user called the test route: %d", st)
	}
	var ans pushTestAnswer
	if st := api(t, n, rootTok, "POST", "/admin/push/test/alice", nil, &ans); st != 200 {
		t.Fatalf("test route: %d", st)
	}
	got := map[string]pushbridge.TestResult{}
	for _, r := range ans.Results {
		got[r.Device] = r
	}
	want := map[string]pushbridge.TestResult{
		"browser":   {Device: "browser", Platform: "webpush", Outcome: "delivered", Status: 201},
		"old-phone": {Device: "old-phone", Platform: "apns", Outcome: "dead_token", Status: 410, Reason: "Unregistered", Removed: true},
		"phone":     {Device: "phone", Platform: "apns", Outcome: "delivered", Status: 200},
		"pixel":     {Device: "pixel", Platform: "fcm", Outcome: "delivered", Status: 200},
	}
	if len(ans.Results) != len(want) {
		t.Fatalf("results %+v", ans.Results)
	}
	for d, w := range want {
		if got[d] != w {
			t.Errorf("%s: got %+v, want %+v", d, got[d], w)
		}
	}

	// Each mock got exactly one correct notification per live device.
	var apnsPhone []pushtest.APNsRequest
	for _, r := range m.apns.Requests() {
		if r.Token == phone {
			apnsPhone = append(apnsPhone, r)
		}
	}
	if len(apnsPhone) != 1 {
		t.Fatalf("APNs got %d requests for the phone", len(apnsPhone))
	}
	r := apnsPhone[0]
	alert, _ := r.APS["alert"].(map[string]any)
	if r.Status != 200 || r.Topic != "com.example.chat" || r.PushType != "alert" || r.KeyID != "KEY1234567" ||
		alert["body"] != pushbridge.TestNotificationText {
		t.Errorf("APNs request %+v", r)
	}
	if reqs := m.fcm.Requests(); len(reqs) != 1 || reqs[0].Message.Token != pixel || reqs[0].Status != 200 ||
		reqs[0].Message.Notification.Body != pushbridge.TestNotificationText || reqs[0].Project != "test-project" {
		t.Errorf("FCM requests %+v", reqs)
	}
	wreqs := wp.Requests()
	if len(wreqs) != 1 || wreqs[0].Status != 201 || wreqs[0].Subject != "mailto:ops@example.com" {
		t.Fatalf("Web Push requests %+v (errors %v)", wreqs, wp.Errors())
	}
	var payload pushbridge.WebPushPayload
	if err := json.Unmarshal(wreqs[0].Payload, &payload); err != nil || payload.Body != pushbridge.TestNotificationText {
		t.Errorf("Web Push payload %q: %v", wreqs[0].Payload, err)
	}

	// The dead token's registration is gone; the others stay.
	var list deviceList
	if st := api(t, n, aliceTok, "GET", "/user/me/devices", nil, &list); st != 200 {
		t.Fatalf("list: %d", st)
	}
	var names []string
	for _, d := range list.Devices {
		names = append(names, d.Device)
	}
	if strings.Join(names, ",") != "browser,phone,pixel" {
		t.Errorf("devices after the test: %v", names)
	}
	checkMetric(t, n, "edgechat_push_sent_total", map[string]string{"provider": "apns", "result": "delivered"}, 1)
	checkMetric(t, n, "edgechat_push_sent_total", map[string]string{"provider": "apns", "result": "dead_token"}, 1)
	checkMetric(t, n, "edgechat_push_sent_total", map[string]string{"provider": "webpush", "result": "delivered"}, 1)
	checkMetric(t, n, "edgechat_push_tokens_removed_total", map[string]string{"provider": "apns"}, 1)

	// A user with no devices: no results.
	if st := api(t, n, rootTok, "POST", "/admin/push/test/nobody", nil, &ans); st != 200 || len(ans.Results) != 0 {
		t.Errorf("no devices: %d %+v", st, ans)
	}
}

// checkMetric asserts a counter's value in the node's registry.
func checkMetric(t *testing.T, n *nodetest.Node, name string, labels map[string]string, want float64) {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if got := m.GetCounter().GetValue(); got != want {
				t.Errorf("%s%v = %v, want %v", name, labels, got, want)
			}
			return
		}
	}
	t.Errorf("%s%v: not found", name, labels)
}
