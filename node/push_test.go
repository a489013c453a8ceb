package node_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/push"
)

// withPush enables FCM (the service account of a mock nobody sends to)
// and Web Push; APNs stays off.
func withPush(t *testing.T) nodetest.Option {
	creds := filepath.Join(t.TempDir(), "fcm.json")
	if err := os.WriteFile(creds, pushtest.StartFCM(t, pushtest.FCMOptions{}).ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	return nodetest.WithConfig(func(c *node.Config) {
		c.FCMCredentialsFile = creds
		c.WebPushSubject = "mailto:ops@example.com"
		c.PushPrivateEndpoints = true // the mock push service listens on 127.0.0.1
	})
}

type deviceList struct {
	Devices []struct {
		Device      string `json:"device"`
		Platform    string `json:"platform"`
		TokenSuffix string `json:"tokenSuffix"`
	} `json:"devices"`
}

func fcmToken(seed string) string { return "f" + seed + ":APA91b" + strings.Repeat("Hq_-7", 30) }

func webSubscription(t *testing.T, endpoint string) map[string]any {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	return map[string]any{"endpoint": endpoint, "keys": map[string]string{
		"p256dh": base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		"auth":   base64.RawURLEncoding.EncodeToString(auth)}}
}

func vapidKey(t *testing.T, n *nodetest.Node) string {
	var out struct {
		PublicKey string `json:"publicKey"`
	}
	if st := api(t, n, "", "GET", "/push/vapid", nil, &out); st != 200 {
		return ""
	}
	return out.PublicKey
}

func TestPushDevicesThroughANode(t *testing.T) {
	n := nodetest.StartNode(t, withPush(t))
	aliceTok := n.NewUser(t, "alice")
	var errBody struct {
		Error struct{ Code string } `json:"error"`
	}
	if st := api(t, n, aliceTok, "POST", "/user/me/devices", map[string]any{"device": "phone", "platform": "apns",
		"token": strings.Repeat("ab", 32), "appId": "com.example.chat", "sandbox": false}, &errBody); st != 409 || errBody.Error.Code != push.CodePushDisabled {
		t.Fatalf("apns while off: %d %+v", st, errBody)
	}
	if st := api(t, n, aliceTok, "POST", "/user/me/devices", map[string]any{"device": "pixel", "platform": "fcm", "token": fcmToken("a")}, nil); st != 200 {
		t.Fatalf("fcm: %d", st)
	}
	if st := api(t, n, aliceTok, "POST", "/user/me/devices", map[string]any{"device": "browser-1", "platform": "webpush",
		"subscription": webSubscription(t, "https://push.example.com/ep/1")}, nil); st != 200 {
		t.Fatalf("webpush: %d", st)
	}
	if st := api(t, n, aliceTok, "POST", "/user/me/devices", map[string]any{"device": "b2", "platform": "webpush",
		"subscription": webSubscription(t, "http://push.example.com/ep/2")}, &errBody); st != 400 || errBody.Error.Code != push.CodeInvalidSubscription {
		t.Fatalf("http endpoint: %d %+v", st, errBody)
	}
	var list deviceList
	if st := api(t, n, aliceTok, "GET", "/user/me/devices", nil, &list); st != 200 || len(list.Devices) != 2 {
		t.Fatalf("list: %d %+v", st, list)
	}
	// Mutes and the preview preference.
	if st := api(t, n, aliceTok, "PUT", "/user/me/mutes/group:g1", map[string]string{"until": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, nil); st != 200 {
		t.Fatalf("mute: %d", st)
	}
	if muted, err := n.Push.IsMuted("alice", push.GroupConversation("g1"), time.Now()); err != nil || !muted {
		t.Fatalf("IsMuted: %v %v", muted, err)
	}
	if st := api(t, n, aliceTok, "PUT", "/user/me/push", map[string]string{"preview": "none"}, nil); st != 200 {
		t.Fatalf("preview: %d", st)
	}
	if p, _ := n.Push.Preview("alice"); p != push.PreviewNone {
		t.Fatalf("Preview = %q", p)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if k := vapidKey(t, n); len(k) != 87 {
			return fmt.Errorf("vapid key %q", k)
		}
		return nil
	})

	// Logout of the phone's session drops its registration; a logout
	// that names no device leaves the others.
	login := func() string {
		var tk struct {
			RefreshToken string `json:"refreshToken"`
		}
		if st := api(t, n, "", "POST", "/auth/login", map[string]string{"username": "alice", "password": nodetest.Password("alice")}, &tk); st != 200 {
			t.Fatalf("login: %d", st)
		}
		return tk.RefreshToken
	}
	if st := api(t, n, "", "POST", "/auth/logout", map[string]string{"refreshToken": login()}, nil); st != 204 {
		t.Fatalf("logout: %d", st)
	}
	if ds, _ := n.Push.Devices("alice"); len(ds) != 2 {
		t.Fatalf("a logout without device removed registrations: %+v", ds)
	}
	if st := api(t, n, "", "POST", "/auth/logout", map[string]string{"refreshToken": login(), "device": "pixel"}, nil); st != 204 {
		t.Fatalf("logout of pixel: %d", st)
	}
	if ds, _ := n.Push.Devices("alice"); len(ds) != 1 || ds[0].Device != "browser-1" {
		t.Fatalf("after logout of pixel: %+v", ds)
	}
	if st := api(t, n, aliceTok, "DELETE", "/user/me/devices/browser-1", nil, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	if st := api(t, n, aliceTok, "GET", "/user/me/devices", nil, &list); st != 200 || len(list.Devices) != 0 {
		t.Fatalf("list after delete: %d %+v", st, list)
	}
}

func TestPushRegistrationsReplicate(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, withPush(t))
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok := n1.NewUser(t, "alice")
	bobTok := n1.NewUser(t, "bob")
	if st := api(t, n2, aliceTok, "POST", "/user/me/devices", map[string]any{"device": "pixel", "platform": "fcm", "token": fcmToken("shared")}, nil); st != 200 {
		t.Fatalf("register on n2: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var list deviceList
		if st := api(t, n3, aliceTok, "GET", "/user/me/devices", nil, &list); st != 200 || len(list.Devices) != 1 {
			return fmt.Errorf("n3 list: %d %+v", st, list)
		}
		return nil
	})
	// The phone changes hands, registered on n3: on n1 the token is bob's.
	if st := api(t, n3, bobTok, "POST", "/user/me/devices", map[string]any{"device": "android", "platform": "fcm", "token": fcmToken("shared")}, nil); st != 200 {
		t.Fatalf("register on n3: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		d, err := n1.Push.DeviceByToken(push.PlatformFCM, fcmToken("shared"))
		if err != nil || d.ClientID() != "bob/android" {
			return fmt.Errorf("n1 token holder %+v %v", d, err)
		}
		if ds, _ := n1.Push.Devices("alice"); len(ds) != 0 {
			return fmt.Errorf("alice still has %+v", ds)
		}
		return nil
	})
	// One VAPID key, the same on every node.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		k1 := vapidKey(t, n1)
		if k1 == "" {
			return fmt.Errorf("no key on n1")
		}
		for _, n := range nodes[1:] {
			if k := vapidKey(t, n); k != k1 {
				return fmt.Errorf("%s key %q, n1 %q", n.Config.NodeID, k, k1)
			}
		}
		_, priv, err := n2.Push.VAPIDKeys()
		if err != nil || priv == "" {
			return fmt.Errorf("n2 private key: %v", err)
		}
		return nil
	})
}
