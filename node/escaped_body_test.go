package node_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// asciiJSON writes a JSON string with every non-ASCII character as a
// \u escape, as Python's json.dumps does by default (ensure_ascii).
func asciiJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r > 0x7e:
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
				continue
			}
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// A body within its 8 KiB is accepted however the client's JSON encoder
// escapes it: Go's encoding/json (and so the Go SDK) writes <, > and &
// as \u003c, Python's json.dumps every non-ASCII character as \uXXXX,
// every encoder a quote or a line break as two bytes. The whole payload
// was held to 16 KiB, so a 6 KiB Russian text from a Python client, an
// HTML snippet from the Go SDK or a quoted block was refused "envelope
// too large" although its body was within the documented limit (and
// the server stores its own encoding of the body either way).
func TestBodyWithinItsLimitIsAcceptedHoweverItIsEscaped(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	goJSON := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	cases := []struct {
		name, body string
		enc        func(string) string
	}{
		{"Russian, ensure_ascii", strings.Repeat("привет, ", 545), asciiJSON},  // 8175 bytes
		{"emoji, ensure_ascii", strings.Repeat("🙂", 2048), asciiJSON},          // 8192 bytes
		{"HTML, Go's encoding/json", strings.Repeat("<b>x</b>", 1024), goJSON}, // 8192 bytes
		{"quotes", strings.Repeat(`"`, 8192), goJSON},
		{"the worst: every byte 6", strings.Repeat("<", 8192), goJSON},
	}
	for i, c := range cases {
		if len(c.body) > 8192 {
			t.Fatalf("%s: body of %d bytes, over the limit", c.name, len(c.body))
		}
		payload := fmt.Sprintf(`{"cid":"m%d","type":"text","body":%s}`, i, c.enc(c.body))
		if code, pr := alice.Pub(t, "user/bob/newMessage", 1, payload); code != 0 {
			t.Errorf("MQTT, %s (body %d bytes, payload %d): PUBACK %#x %q, want 0", c.name, len(c.body), len(payload), code, pr.Properties.ReasonString)
		}
		var raw json.RawMessage
		httpPayload := fmt.Sprintf(`{"to":"bob","cid":"h%d","type":"text","body":%s}`, i, c.enc(c.body))
		if st := api(t, n, aliceTok, "POST", "/chat/messages", json.RawMessage(httpPayload), &raw); st != 201 {
			t.Errorf("HTTP, %s (body %d bytes, request %d): %d %s, want 201", c.name, len(c.body), len(httpPayload), st, raw)
		}
	}
	var page historyPage
	if st := api(t, n, bobTok, "GET", "/chat/history?with=alice&limit=200", nil, &page); st != 200 {
		t.Fatalf("history: %d", st)
	}
	got := map[string]string{}
	for _, m := range page.Messages {
		got[m.CID] = m.Body
	}
	for i, c := range cases {
		for _, cid := range []string{fmt.Sprint("m", i), fmt.Sprint("h", i)} {
			if b, ok := got[cid]; ok && b != c.body {
				t.Errorf("%s: %s stored with another body (%d bytes)", c.name, cid, len(b))
			}
		}
	}
}
