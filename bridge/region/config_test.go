package region

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestParseLink(t *testing.T) {
	for in, want := range map[string]Link{
		"us=tcp://127.0.0.1:1883":              {Name: "us", URL: "tcp://127.0.0.1:1883"},
		" eu-1=tls://mqtt.eu.example.com:8883": {Name: "eu-1", URL: "tls://mqtt.eu.example.com:8883"},
		"us=wss://chat.us.example.com/mqtt":    {Name: "us", URL: "wss://chat.us.example.com/mqtt"},
		"us=wss://chat.us.example.com:8443":    {Name: "us", URL: "wss://chat.us.example.com:8443/mqtt"},
		"us=ws://127.0.0.1:8080/edge/mqtt":     {Name: "us", URL: "ws://127.0.0.1:8080/edge/mqtt"},
	} {
		if got, err := ParseLink(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseLink(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "us", "us=", "=tcp://h:1", "u s=tcp://h:1", "us=http://h:1", "us=tcp://h", "us=tcp://h:1/x", "us=wss://", "us=wss://u:p@h/mqtt", "us=https://h/mqtt"} {
		if l, err := ParseLink(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("ParseLink(%q) = %+v, %v; want ErrConfig", bad, l, err)
		}
	}
}

func TestParseSecrets(t *testing.T) {
	shared := strings.Repeat("s", 16)
	one := func(s string) []string { return []string{s} }
	got, err := ParseSecrets([]byte("# the links' secret\n\n"+shared+"\n"), []string{"us", "ap"})
	if err != nil || !reflect.DeepEqual(got["us"], one(shared)) || !reflect.DeepEqual(got["ap"], one(shared)) {
		t.Fatalf("shared: %v, %v", got, err)
	}
	got, err = ParseSecrets([]byte("us="+shared+"1\nap="+shared+"2\n"), []string{"us", "ap"})
	if err != nil || !reflect.DeepEqual(got["us"], one(shared+"1")) || !reflect.DeepEqual(got["ap"], one(shared+"2")) {
		t.Fatalf("per link: %v, %v", got, err)
	}
	// A shared secret may hold '=' when it does not start with a link's name.
	eq := "x=" + shared
	if got, err := ParseSecrets([]byte(eq), []string{"us"}); err != nil || !reflect.DeepEqual(got["us"], one(eq)) {
		t.Fatalf("secret with '=': %v, %v", got, err)
	}
	// Rotation: further lines are secrets accepted too, in file order
	// (the first is sent).
	got, err = ParseSecrets([]byte("a"+shared+"\nb"+shared), []string{"us", "ap"})
	if err != nil || !reflect.DeepEqual(got["us"], []string{"a" + shared, "b" + shared}) || !reflect.DeepEqual(got["ap"], got["us"]) {
		t.Fatalf("shared, two secrets: %v, %v", got, err)
	}
	got, err = ParseSecrets([]byte("us=new"+shared+"\nap="+shared+"\nus=old"+shared), []string{"us", "ap"})
	if err != nil || !reflect.DeepEqual(got["us"], []string{"new" + shared, "old" + shared}) || !reflect.DeepEqual(got["ap"], one(shared)) {
		t.Fatalf("per link, two secrets for us: %v, %v", got, err)
	}
	for _, bad := range []string{"", "short", "us=" + shared + "\nap=short", "us=" + shared, "us=" + shared + "\n" + shared,
		shared + "\nshort", "us=" + shared + "\nap=" + shared + "\nus=short"} {
		if _, err := ParseSecrets([]byte(bad), []string{"us", "ap"}); !errors.Is(err, ErrConfig) {
			t.Errorf("ParseSecrets(%q) = %v, want ErrConfig", bad, err)
		}
	}
}

func FuzzParseLink(f *testing.F) {
	for _, s := range []string{"us=tcp://127.0.0.1:1883", "eu=tls://h:8883", "x=tcp://[::1]:1", "=", "us=tcp://h:1/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLink(s)
		if err != nil {
			return
		}
		if address.ValidRegion(l.Name) != nil || !strings.HasPrefix(l.URL, "tcp://") && !strings.HasPrefix(l.URL, "tls://") &&
			!strings.HasPrefix(l.URL, "ws://") && !strings.HasPrefix(l.URL, "wss://") {
			t.Fatalf("ParseLink(%q) accepted %+v", s, l)
		}
		if again, err := ParseLink(l.Name + "=" + l.URL); err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("ParseLink(%q) = %+v does not read back: %+v, %v", s, l, again, err)
		}
	})
}

func FuzzParseSecrets(f *testing.F) {
	f.Add([]byte("a-shared-secret-0123\n"))
	f.Add([]byte("us=0123456789abcdef\nap=0123456789abcdef"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseSecrets(data, []string{"us", "ap"})
		if err != nil {
			return
		}
		for _, n := range []string{"us", "ap"} {
			if len(got[n]) == 0 {
				t.Fatalf("no secret for %s", n)
			}
			for _, s := range got[n] {
				if len(s) < MinSecretLen {
					t.Fatalf("accepted a short secret for %s: %q", n, s)
				}
			}
		}
	})
}

func FuzzCursorCmd(f *testing.F) {
	f.Add(cursorCmd{Region: "us", Pos: 7}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCursorCmd(b)
		if err != nil {
			return
		}
		if address.ValidRegion(c.Region) != nil || string(c.encode()) != string(b) {
			t.Fatalf("decodeCursorCmd(%x) = %+v", b, c)
		}
	})
}

// FuzzCheck: what a link publishes is outside input. Whatever check
// accepts is a direct message with an ID from a user of the link's
// region to a local user.
func FuzzCheck(f *testing.F) {
	b := &Bridge{cfg: Config{Region: "us"}, log: slog.New(slog.DiscardHandler)}
	b.m, _ = newMetrics(nil, b)
	f.Add("$link/eu/dm", `{"id":"7211938138472448001","from":"alice@eu","to":"bob@us","cid":"c1","type":"text","body":"hi"}`)
	f.Add("$link/eu/dm", `{"id":"1","from":"alice@asia","to":"bob@us","cid":"c1","type":"text","body":"hi"}`)
	f.Add("$link/eu/dm", `{"id":"1","from":"alice@eu","to":"bob","cid":"c1","type":"text","body":"hi","group":"g"}`)
	f.Fuzz(func(t *testing.T, topic, payload string) {
		env, err := b.check("eu", topic, []byte(payload))
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, wire.ErrForbidden) {
				t.Fatalf("check: %v (neither invalid nor forbidden)", err)
			}
			return
		}
		from, ferr := address.Parse(env.From)
		if topic != DMTopic("eu") || env.ID == 0 || env.Group != "" || ferr != nil || from.Region != "eu" ||
			wire.ValidUserID(from.Name) != nil || wire.ValidUserID(env.To) != nil || env.CID == "" {
			t.Fatalf("check accepted %q %q as %+v", topic, payload, env)
		}
	})
}
