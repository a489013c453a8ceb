package broker

import (
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// FuzzParseTyping: a typing payload (user/{uid}/typing, group/{gid}/typing)
// is refused with an error or read as "typing" or "stopped", never more
// than maxTypingBytes, never a panic.
func FuzzParseTyping(f *testing.F) {
	for _, s := range []string{"", `{}`, `{"state":"typing"}`, `{"state":"stopped","from":"mallory"}`, `{"state":null}`,
		`{"state":"dancing"}`, `{"STATE":"stopped"}`, `{"state":"typing"}{}`, `{"state":"typing","x":1}`, `[]`, `null`, `{"state":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		state, err := parseTyping(payload)
		if err != nil {
			if state != "" {
				t.Fatalf("%q: refused (%v) with state %q", payload, err, state)
			}
			return
		}
		if state != "typing" && state != "stopped" {
			t.Fatalf("%q: state %q", payload, state)
		}
		if len(payload) > maxTypingBytes {
			t.Fatalf("a typing payload of %d bytes accepted, limit %d", len(payload), maxTypingBytes)
		}
	})
}

// FuzzParseReceipt: a receipt (user/{uid}/receipts) is refused with an
// error or read as a read or delivered receipt of a message ID, never
// more than maxReceiptBytes, never a panic; what the server delivers of
// it (with the reader as peer) reads back the same.
func FuzzParseReceipt(f *testing.F) {
	for _, s := range []string{`{"type":"read","upTo":"7211938138472448001"}`, `{"type":"delivered","upTo":"1","peer":"mallory"}`,
		`{"type":"read","upTo":7211938138472448001}`, `{"type":"read","upTo":"0"}`, `{"type":"read","upTo":"-1"}`,
		`{"type":"read","upTo":"99999999999999999999"}`, `{"type":"seen","upTo":"1"}`, `{"TYPE":"read","UPTO":"1"}`,
		`{"type":"read","upTo":"1"} x`, `{"type":"read","upTo":"1","type":"delivered"}`, ``, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := parseReceipt(payload)
		if err != nil {
			return
		}
		if len(payload) > maxReceiptBytes {
			t.Fatalf("a receipt of %d bytes accepted, limit %d", len(payload), maxReceiptBytes)
		}
		if r.Type != wire.ReceiptRead && r.Type != wire.ReceiptDelivered || r.UpTo == 0 {
			t.Fatalf("%q accepted as %+v", payload, r)
		}
		sent := wire.Receipt{Type: r.Type, UpTo: r.UpTo, Peer: "alice"}
		back, err := parseReceipt(mustJSON(sent))
		if err != nil || back != sent {
			t.Fatalf("%q: delivered as %s, which reads back as %+v (%v)", payload, mustJSON(sent), back, err)
		}
	})
}
