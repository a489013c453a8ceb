package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/snowflake"
)

var fastSeeds = []string{
	`{"cid":"c-7f3a","type":"text","body":"hello","replyTo":"7211938138472448001"}`,
	` { "cid" : "c" ,"type":"text" , "body":"x" }` + "\n\t",
	`{"cid":"c","type":"text","body":"x","from":"mallory","id":"1","to":"bob","group":"g"}`,
	`{"cid":"c","cid":"d","type":"text","body":"x"}`,
	`{}`, `{ }`, `{"cid":"c",}`, `{"cid":"c"} {}`, `{"cid":"c"}}`, `{"cid":"c"`,
	`{"CID":"c","type":"text","body":"x"}`,
	`{"cid":"c","type":"text","body":"a\"b"}`,
	`{"cid":"c","type":"text","body":null}`,
	`{"cid":"c","type":"text","body":"x","id":1}`,
	`{"cid":"c","type":"text","body":"x","media":{"id":"m"}}`,
	`{"cid":"c","type":"text","body":"x","other":"y"}`,
	"{\"cid\":\"c\x01\",\"type\":\"text\",\"body\":\"x\"}",
	`{"cid":"c","type":"text","body":"<b>&amp;</b> é ☃"}`,
	`["cid"]`, `"x"`, ``,
}

// The fast path takes only the common shape (TestEnvelopeFastPathTakesTheCommonShape)
// and, on whatever it accepts, reads exactly what encoding/json reads.
func FuzzEnvelopeFastPathAgrees(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if !utf8.Valid(payload) {
			return // ParseEnvelope refuses it before either reader runs
		}
		fast, ok := parseClientEnvelopeFast(payload)
		if !ok {
			return
		}
		slow, err := decodeClientEnvelope(payload)
		if err != nil {
			t.Fatalf("fast path accepted %q, the decoder refuses it: %v", payload, err)
		}
		// The server-owned fields are dropped by ParseEnvelope; compare
		// what it keeps.
		slow.ID, slow.From, slow.To, slow.Group = nil, nil, nil, nil
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast path read %+v, the decoder %+v", payload, show(fast), show(slow))
		}
	})
}

func show(ce clientEnvelope) map[string]any {
	m := map[string]any{}
	for k, p := range map[string]*string{"cid": ce.CID, "type": ce.Type, "body": ce.Body, "replyTo": ce.ReplyTo} {
		if p != nil {
			m[k] = *p
		}
	}
	m["media"], m["mentions"] = ce.Media, string(ce.Mentions)
	return m
}

func TestEnvelopeFastPathTakesTheCommonShape(t *testing.T) {
	for _, s := range []string{
		`{"cid":"c-7f3a","type":"text","body":"hello","replyTo":"7211938138472448001"}`,
		` { "cid" : "c" ,"type":"text" , "body":"x" }` + "\n\t",
		`{"cid":"c","type":"text","body":"x","from":"mallory","id":"1","to":"bob","group":"g"}`,
		`{"cid":"c","type":"text","body":"<b>&amp;</b> é ☃"}`,
	} {
		if _, ok := parseClientEnvelopeFast([]byte(s)); !ok {
			t.Errorf("fast path refused the common shape %s", s)
		}
	}
	for _, s := range []string{
		`{"CID":"c","type":"text","body":"x"}`,        // the decoder matches keys in any case
		`{"cid":"c","type":"text","body":"a\"b"}`,     // escapes
		`{"cid":"c","type":"text","body":null}`,       // null
		`{"cid":"c","type":"text","body":"x","id":1}`, // not a string
		`{"cid":"c","type":"media","media":{"id":"m"}}`,
		`{"cid":"c","type":"text","body":"x","other":"y"}`,
		`{"cid":"c","type":"text","body":"x"} {}`,
	} {
		if _, ok := parseClientEnvelopeFast([]byte(s)); ok {
			t.Errorf("fast path took %s, which is the decoder's", s)
		}
	}
}

// The outcome of ParseEnvelope does not depend on which reader ran.
func TestParseEnvelopeSameAnswersEitherWay(t *testing.T) {
	for _, s := range fastSeeds {
		env, err := ParseEnvelope([]byte(s))
		ce, derr := decodeClientEnvelope([]byte(s))
		if (err == nil) != (derr == nil) && derr != nil {
			t.Errorf("%s: ParseEnvelope %v, decoder %v", s, err, derr)
		}
		if err == nil && (env.CID != *ce.CID || env.Type != *ce.Type) {
			t.Errorf("%s: ParseEnvelope %+v differs from the decoder's %+v", s, env, show(ce))
		}
	}
}

// Marshal's fast path writes exactly json.Marshal's bytes.
func FuzzEnvelopeMarshalFastAgrees(f *testing.F) {
	f.Add(uint64(7211938138472448002), "alice", "bob", "", "c-1", "text", "hello <b> & \"q\" \\ é\u2028", uint64(0), "carol", true)
	f.Add(uint64(0), "", "", "g1", "c", "media", "", uint64(5), "", false)
	f.Add(uint64(1), "a", "b", "", "c\x01", "text", "\xff", uint64(1), "d", false)
	f.Fuzz(func(t *testing.T, id uint64, from, to, group, cid, typ, body string, replyTo uint64, mention string, withMedia bool) {
		e := Envelope{ID: snowflake.ID(id), From: from, To: to, Group: group, CID: cid, Type: typ, Body: body}
		if replyTo != 0 {
			r := snowflake.ID(replyTo)
			e.ReplyTo = &r
		}
		if mention != "" {
			e.Mentions = []string{mention, mention + "x"}
		}
		if withMedia {
			e.Media = &Media{ID: "m"}
		}
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Marshal(); !bytes.Equal(got, want) {
			t.Fatalf("Marshal wrote %s, json.Marshal %s", got, want)
		}
		if fast, ok := appendEnvelopeFast(nil, &e); ok && !bytes.Equal(fast, want) {
			t.Fatalf("fast path wrote %s, json.Marshal %s", fast, want)
		}
	})
}
