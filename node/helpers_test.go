package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

var checkFor = testutil.CheckFor

// connack is the CONNACK reason code a connection attempt got (0xff when
// none came).
func connack(t *testing.T, addr, clientID, user, token string) byte {
	t.Helper()
	_, ca, err := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: clientID, Username: user, Password: token})
	if ca == nil {
		t.Logf("connect %s: no CONNACK: %v", clientID, err)
		return 0xff
	}
	return ca.ReasonCode
}

// mustConnectV5 connects user's device (client ID {user}/{device}).
func mustConnectV5(t testing.TB, addr, user, device, token string) *mqtttest.Client {
	t.Helper()
	return mqtttest.MustDial(t, addr, mqtttest.Options{ClientID: user + "/" + device, Username: user, Password: token})
}

type envelope struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	To      string `json:"to"`
	CID     string `json:"cid"`
	Type    string `json:"type"`
	Body    string `json:"body"`
	ReplyTo string `json:"replyTo"`
}

func decodeEnvelope(t *testing.T, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("delivered payload %q is not an envelope: %v", b, err)
	}
	return e
}

// api calls the HTTP API and decodes the JSON answer into out (if not nil).
func api(t testing.TB, n *nodetest.Node, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.HTTPURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ratelimit.DoHTTP(nil, req, 0) // tests with limits on wait out 429s
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil && len(rb) > 0 {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, rb, err)
		}
	}
	return resp.StatusCode
}

func textMsg(cid, body string) string {
	return fmt.Sprintf(`{"cid":%q,"type":"text","body":%q}`, cid, body)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// syncAll reads the whole of /chat/sync for token, page by page.
func syncAll(t testing.TB, n *nodetest.Node, token string) []envelope {
	t.Helper()
	var all []envelope
	cursor := ""
	for {
		var page syncPage
		if st := api(t, n, token, "GET", "/chat/sync?limit=1000&since="+cursor, nil, &page); st != 200 {
			t.Fatalf("sync: %d", st)
		}
		all = append(all, page.Messages...)
		if !page.HasMore {
			return all
		}
		if page.Cursor == cursor {
			t.Fatalf("sync: hasMore with the same cursor %q", cursor)
		}
		cursor = page.Cursor
	}
}
