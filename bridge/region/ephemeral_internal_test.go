package region

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

func testEphemeral(t testing.TB) *ephemeral {
	t.Helper()
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bridge{cfg: Config{Region: "eu"}, m: m, log: slog.Default()}
	return &ephemeral{b: b, link: "us", last: map[string]wire.Presence{}, watched: map[string]bool{"bob": true}}
}

func TestTranslateEphemeral(t *testing.T) {
	e := testEphemeral(t)
	for _, c := range []struct {
		topic, payload string
		kind, outTopic string
		outPayload     string
	}{
		{"presence/bob", `{"status":"online","lastSeen":"2026-01-02T03:04:05Z"}`, kindPresence, "presence/bob@us", `{"status":"online","lastSeen":"2026-01-02T03:04:05Z"}`},
		{"presence/bob", `{"lastSeen":"2026-01-02T03:04:05Z"}`, kindInvalid, "", ""},
		{"presence/bob@us", `{"status":"online"}`, kindInvalid, "", ""},
		{"user/alice@eu/typing", `{"state":"typing","from":"bob"}`, kindTyping, "user/alice/typing", `{"state":"typing","from":"bob@us"}`},
		{"user/alice@eu/typing", `{"state":"typing","from":"bob@us"}`, kindTyping, "user/alice/typing", `{"state":"typing","from":"bob@us"}`},
		{"user/alice@eu/typing", `{"state":"typing","from":"bob@asia"}`, kindInvalid, "", ""}, // a third region's user
		{"user/alice@eu/typing", `{"state":"typing","from":"alice@eu"}`, kindInvalid, "", ""}, // this region's user
		{"user/alice@eu/typing", `{"state":"dancing","from":"bob"}`, kindInvalid, "", ""},
		{"user/alice@asia/typing", `{"state":"typing","from":"bob"}`, kindInvalid, "", ""},
		{"user/alice/typing", `{"state":"typing","from":"bob"}`, kindInvalid, "", ""},
		{"user/alice@eu/receipts", `{"type":"read","upTo":"42","peer":"bob"}`, kindReceipt, "user/alice/receipts", `{"type":"read","upTo":"42","peer":"bob@us"}`},
		{"user/alice@eu/receipts", `{"type":"read","upTo":"0","peer":"bob"}`, kindInvalid, "", ""},
		{"user/alice@eu/newMessage", `{}`, kindInvalid, "", ""},
	} {
		out, kind := e.translate(c.topic, []byte(c.payload))
		if kind != c.kind || out.Topic != c.outTopic || string(out.Payload) != c.outPayload {
			t.Errorf("%s %s: %s %s %s, want %s %s %s", c.topic, c.payload, kind, out.Topic, out.Payload, c.kind, c.outTopic, c.outPayload)
		}
	}
}

// Whatever the other region sends, what is republished here is a topic
// of this region's users or a presence of the link's region, with the
// sender qualified with the link's region.
func FuzzTranslateEphemeral(f *testing.F) {
	f.Add("presence/bob", `{"status":"online"}`)
	f.Add("user/alice@eu/typing", `{"state":"typing","from":"bob"}`)
	f.Add("user/alice@eu/receipts", `{"type":"delivered","upTo":"7","peer":"bob@us"}`)
	f.Add("user/alice@eu/typing", `{"state":"typing","from":"mallory@asia"}`)
	e := testEphemeral(f)
	f.Fuzz(func(t *testing.T, topic, payload string) {
		out, kind := e.translate(topic, []byte(payload))
		if out.Topic == "" {
			return
		}
		tp := wire.ParseTopic(out.Topic)
		switch kind {
		case kindPresence:
			if tp.Kind != wire.KindPresence || address.RegionOf(tp.Owner) != "us" || !out.Retain {
				t.Fatalf("%s %q → %+v", topic, payload, out)
			}
		case kindTyping, kindReceipt:
			if tp.Kind != wire.KindUserTyping && tp.Kind != wire.KindReceipts || strings.Contains(tp.Owner, "@") {
				t.Fatalf("%s %q → %+v", topic, payload, out)
			}
			if from := out.UserProps[0].Value; address.RegionOf(from) != "us" || !strings.Contains(string(out.Payload), `"`+from+`"`) {
				t.Fatalf("%s %q → from %q %s", topic, payload, from, out.Payload)
			}
		default:
			t.Fatalf("%s %q: kind %s with output %+v", topic, payload, kind, out)
		}
	})
}

// An other region's profile request: anything that is not {"user":name}
// of a valid user ID on the link's own topic is refused as invalid;
// the rest is answered with found or not.
func FuzzAnswerProfileRequest(f *testing.F) {
	f.Add("$link/us/profile", `{"user":"bob"}`)
	f.Add("$link/us/profile", `{"user":"bob@eu"}`)
	f.Add("$link/eu/profile", `{"user":"bob"}`)
	f.Add("$link/us/profile", `{"user":""}`)
	e := testEphemeral(f)
	f.Fuzz(func(t *testing.T, topic, payload string) {
		out, err := e.b.Answer(context.Background(), "us", topic, []byte(payload))
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatalf("%s %q: %v", topic, payload, err)
			}
			return
		}
		if topic != ProfileTopic("us") || string(out) != `{"found":false}` {
			t.Fatalf("%s %q → %s", topic, payload, out)
		}
	})
}

// A link connects as $link/{region} or, for a node's query connection,
// $link/{region}/q/{node}, always with username $link/{region}.
func TestAuthenticateQueryConnection(t *testing.T) {
	e := testEphemeral(t)
	b := e.b
	b.links = map[string]Link{"us": {Name: "us", Secret: "a-shared-link-secret-of-the-test"}}
	for _, c := range []struct {
		id, user string
		ok       bool
	}{
		{"$link/us", "$link/us", true},
		{"$link/us/q/n1", "$link/us", true},
		{"$link/us/q/", "$link/us", false},
		{"$link/us/q/n1/x", "$link/us", false},
		{"$link/us/x/n1", "$link/us", false},
		{"$link/us/q/n+", "$link/us", false},
		{"$link/us/q/n1", "$link/eu", false},
		{"$link/us", "$link/us/q/n1", false},
		{"$link/eu", "$link/eu", false},
		{"bob", "$link/us", false},
	} {
		region, err := b.Authenticate(c.id, c.user, []byte("a-shared-link-secret-of-the-test"), strconv.Itoa(b.cfg.Number+1), nil)
		if (err == nil) != c.ok || c.ok && region != "us" {
			t.Errorf("client ID %q username %q: %q %v, want ok %v", c.id, c.user, region, err, c.ok)
		}
	}
	if _, err := b.Authenticate("$link/us/q/n1", "$link/us", []byte("wrong-secret-of-sixteen-bytes"), strconv.Itoa(b.cfg.Number+1), nil); err == nil {
		t.Error("a query connection with a wrong secret was accepted")
	}
}

// With the link down, an expired cached profile is served; a user never
// fetched is unavailable.
func TestRemoteProfileStaleWhileLinkDown(t *testing.T) {
	e := testEphemeral(t)
	b := e.b
	b.cfg.Timeout, b.cfg.ProfileTTL, b.cfg.Node = time.Second, time.Minute, "n1"
	b.links = map[string]Link{"us": {Name: "us", URL: "tcp://127.0.0.1:1", Secret: "a-shared-link-secret-of-the-test"}}
	b.q = queries{clients: map[string]*queryClient{}, cache: map[string]cachedProfile{
		"bob@us": {profile: []byte(`{"userId":"bob@us"}`), expires: time.Now().Add(-time.Hour)},
		"eve@us": {expires: time.Now().Add(-time.Hour)}, // no such user, as of an hour ago
	}}
	defer b.closeQueries()
	if p, err := b.RemoteProfile(context.Background(), "bob@us"); err != nil || string(p) != `{"userId":"bob@us"}` {
		t.Fatalf("bob@us: %s %v", p, err)
	}
	if _, err := b.RemoteProfile(context.Background(), "eve@us"); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("eve@us: %v, want not found", err)
	}
	if _, err := b.RemoteProfile(context.Background(), "carol@us"); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("carol@us: %v, want unavailable", err)
	}
	if _, err := b.RemoteProfile(context.Background(), "carol@mars"); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("carol@mars: %v, want not found", err)
	}
}
