package push

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

const (
	h = time.Hour
	m = time.Minute
)

func TestDNDValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    DND
		ok   bool
	}{
		{"overnight", DND{From: 22 * h, To: 7 * h, UTCOffset: 2 * h}, true},
		{"daytime", DND{From: 9 * h, To: 17*h + 30*m}, true},
		{"midnight to a minute before", DND{From: 0, To: 23*h + 59*m, UTCOffset: -14 * h}, true},
		{"+14:00", DND{From: 1 * h, To: 2 * h, UTCOffset: 14 * h}, true},
		{"half-hour zone", DND{From: 1 * h, To: 2 * h, UTCOffset: 5*h + 30*m}, true},
		{"empty window", DND{From: 7 * h, To: 7 * h}, false},
		{"zero value", DND{}, false},
		{"24:00", DND{From: 24 * h, To: 7 * h}, false},
		{"negative", DND{From: -m, To: 7 * h}, false},
		{"seconds", DND{From: 22*h + 30*time.Second, To: 7 * h}, false},
		{"offset past +14", DND{From: 1 * h, To: 2 * h, UTCOffset: 14*h + m}, false},
		{"offset past -14", DND{From: 1 * h, To: 2 * h, UTCOffset: -14*h - m}, false},
		{"offset in seconds", DND{From: 1 * h, To: 2 * h, UTCOffset: time.Second}, false},
	} {
		err := tc.d.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidDND)) {
			t.Errorf("%s: Validate(%+v) = %v", tc.name, tc.d, err)
		}
	}
}

func TestDNDJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want DND
		out  string // the normalized form; "" when in is refused
	}{
		{`{"from":"22:00","to":"07:00","utcOffset":"+02:00"}`, DND{22 * h, 7 * h, 2 * h}, `{"from":"22:00","to":"07:00","utcOffset":"+02:00"}`},
		{`{"from":"00:00","to":"23:59","utcOffset":"-09:30"}`, DND{0, 23*h + 59*m, -9*h - 30*m}, `{"from":"00:00","to":"23:59","utcOffset":"-09:30"}`},
		{`{"from":"01:00","to":"02:00","utcOffset":"-00:00"}`, DND{h, 2 * h, 0}, `{"from":"01:00","to":"02:00","utcOffset":"+00:00"}`},
		{`{"from":"01:00","to":"02:00","utcOffset":"+14:00"}`, DND{h, 2 * h, 14 * h}, `{"from":"01:00","to":"02:00","utcOffset":"+14:00"}`},
		{`{"from":"22:00","to":"22:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"24:00","to":"07:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"22:60","to":"07:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"9:00","to":"17:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"22:00:00","to":"07:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"10pm","to":"07:00","utcOffset":"+02:00"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00","utcOffset":"+14:01"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00","utcOffset":"+15:00"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00","utcOffset":"02:00"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00","utcOffset":"+0200"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00","utcOffset":"Z"}`, DND{}, ""},
		{`{"from":"22:00","to":"07:00"}`, DND{}, ""}, // the offset is required: UTC by default would be wrong for most
		{`{"from":"２２:00","to":"07:00","utcOffset":"+02:00"}`, DND{}, ""},
	} {
		var d DND
		err := json.Unmarshal([]byte(tc.in), &d)
		if tc.out == "" {
			if !errors.Is(err, ErrInvalidDND) {
				t.Errorf("%s: %+v, %v; want ErrInvalidDND", tc.in, d, err)
			}
			continue
		}
		if err != nil || d != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.in, d, err, tc.want)
			continue
		}
		if b, err := json.Marshal(d); err != nil || string(b) != tc.out {
			t.Errorf("%s: marshals to %s, %v; want %s", tc.in, b, err, tc.out)
		}
	}
	if b, err := json.Marshal(DND{From: h, To: h}); err == nil {
		t.Fatalf("an empty window marshals to %s", b)
	}
}

// Each change keeps what it does not name: a client that knows only the
// preview does not turn DND off, and DND changes keep the preview.
func TestUpdateSettingsMerges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, _, _, ok, err := e.svc.DND("alice"); ok || err != nil {
		t.Fatalf("DND before any setting: %v %v", ok, err)
	}
	night := &DND{From: 22 * h, To: 7 * h, UTCOffset: 2 * h}
	st, err := e.svc.SetDND(ctx, "alice", night)
	if err != nil || st.Preview != PreviewFull || st.DND == nil || *st.DND != *night {
		t.Fatalf("SetDND = %+v, %v", st, err)
	}
	if st, err := e.svc.SetPreview(ctx, "alice", PreviewSender); err != nil || st.DND == nil || *st.DND != *night {
		t.Fatalf("SetPreview dropped the window: %+v, %v", st, err)
	}
	from, to, off, ok, err := e.svc.DND("alice")
	if err != nil || !ok || from != 22*h || to != 7*h || off != 2*h {
		t.Fatalf("DND = %v %v %v %v %v", from, to, off, ok, err)
	}
	// A forwarded proposal loses its value: the answer is read back.
	e.prop.LoseValues(true)
	st, err = e.svc.SetDND(ctx, "alice", nil)
	e.prop.LoseValues(false)
	if err != nil || st.DND != nil || st.Preview != PreviewSender {
		t.Fatalf("SetDND(nil) = %+v, %v", st, err)
	}
	if _, _, _, ok, _ := e.svc.DND("alice"); ok {
		t.Fatal("DND still on")
	}
	// Refusals propose nothing.
	before := e.prop.Index()
	if _, err := e.svc.SetDND(ctx, "alice", &DND{From: h, To: h}); !errors.Is(err, ErrInvalidDND) {
		t.Fatalf("empty window: %v", err)
	}
	if _, err := e.svc.UpdateSettings(ctx, "alice", SettingsUpdate{}); err != nil {
		t.Fatalf("empty update: %v", err)
	}
	if e.prop.Index() != before {
		t.Fatalf("refused or empty updates took %d entries", e.prop.Index()-before)
	}
}

// Settings stored, and commands logged, before DND existed still read
// and apply.
func TestSettingsFromBeforeDND(t *testing.T) {
	e := newEnv(t)
	err := e.prop.DB.Update(func(tx *badger.Txn) error {
		return tx.Set([]byte(prefixSettings+"alice"), []byte(`{"preview":"none","updatedAt":"2026-01-01T00:00:00Z"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.svc.Settings("alice"); err != nil || st.Preview != PreviewNone || st.DND != nil {
		t.Fatalf("old settings read as %+v, %v", st, err)
	}
	if _, _, _, ok, err := e.svc.DND("alice"); ok || err != nil {
		t.Fatalf("old settings: DND %v %v", ok, err)
	}
	if _, err := e.svc.SetDND(context.Background(), "bob", &DND{From: 22 * h, To: 7 * h}); err != nil {
		t.Fatal(err)
	}
	old := `{"uid":"bob","preview":"sender","at":"2026-03-01T12:00:00Z"}`
	if _, err := e.prop.Propose(context.Background(), 0x53, []byte(old)); err != nil {
		t.Fatalf("an old command: %v", err)
	}
	if st, _ := e.svc.Settings("bob"); st.Preview != PreviewSender || st.DND == nil {
		t.Fatalf("after an old command: %+v", st)
	}
}

// The settings handler re-validates: a command that bypassed the
// service's checks changes nothing, on the leader and on a follower.
func TestSettingsHandlerRevalidates(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	if _, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.svc.SetDND(ctx, "alice", &DND{From: 22 * h, To: 7 * h, UTCOffset: h}); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	for _, tc := range []struct {
		payload string
		want    error
	}{
		{`{"uid":"alice","setDnd":true,"dnd":{"from":"07:00","to":"07:00","utcOffset":"+00:00"}}`, ErrInvalidDND},
		{`{"uid":"alice","setDnd":true,"dnd":{"from":"25:00","to":"07:00","utcOffset":"+00:00"}}`, ErrInvalidDND},
		{`{"uid":"alice","setDnd":true,"dnd":{"from":"22:00","to":"07:00","utcOffset":"+15:00"}}`, ErrInvalidDND},
		{`{"uid":"alice","setDnd":true,"dnd":"22:00-07:00"}`, errBadCommand},
		{`{"uid":"alice","dnd":{"from":"01:00","to":"07:00","utcOffset":"+00:00"}}`, errBadCommand}, // no setDnd
		{`{"uid":"alice"}`, errBadCommand},
		{`{"uid":"alice","preview":"loud","setDnd":true}`, ErrInvalidPreview},
		{`{"uid":"Alice!","setDnd":true}`, errBadCommand},
		{`{"uid":"alice","setDnd":"yes"}`, errBadCommand},
	} {
		if _, err := e.prop.Propose(ctx, 0x53, []byte(tc.payload)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.payload, err, tc.want)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatalf("refused commands changed the state: %v", e.state())
	}
	if got := fsmtest.Dump(t, f.DB(), "r/push/"); !maps.Equal(before, got) {
		t.Fatalf("follower %v, leader %v", got, before)
	}
}

func TestHTTPSettingsDND(t *testing.T) {
	e := newEnv(t)
	const night = `"dnd":{"from":"22:00","to":"07:00","utcOffset":"+02:00"}`
	if r := e.do("GET", "/user/me/push", "", "alice"); r.Code != 200 || strings.Contains(string(r.Body), `"dnd"`) {
		t.Fatalf("defaults: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/push", `{`+night+`}`, "alice"); r.Code != 200 || !strings.Contains(string(r.Body), night) || !strings.Contains(string(r.Body), `"preview":"full"`) {
		t.Fatalf("set dnd: %d %s", r.Code, r.Body)
	}
	// An old client that sends only the preview keeps the window.
	if r := e.do("PUT", "/user/me/push", `{"preview":"none"}`, "alice"); r.Code != 200 || !strings.Contains(string(r.Body), night) {
		t.Fatalf("set preview: %d %s", r.Code, r.Body)
	}
	if r := e.do("GET", "/user/me/push", "", "alice"); r.Code != 200 || !strings.Contains(string(r.Body), night) || !strings.Contains(string(r.Body), `"preview":"none"`) {
		t.Fatalf("get: %d %s", r.Code, r.Body)
	}
	before := e.state()
	for _, tc := range []struct {
		body, code string
	}{
		{`{"dnd":{"from":"07:00","to":"07:00","utcOffset":"+02:00"}}`, CodeInvalidDND},
		{`{"dnd":{"from":"7:00","to":"08:00","utcOffset":"+02:00"}}`, CodeInvalidDND},
		{`{"dnd":{"from":"07:00","to":"08:00","utcOffset":"+14:30"}}`, CodeInvalidDND},
		{`{"dnd":{"from":"07:00","to":"08:00"}}`, CodeInvalidDND},
		{`{"dnd":{"from":"07:00","to":"08:00","utcOffset":"+02:00","days":[1]}}`, "unknown_field"},
		{`{"dnd":"22:00-07:00"}`, "validation_failed"},
		{`{"preview":"none","dnd":{"from":"07:00","to":"07:00","utcOffset":"+02:00"}}`, CodeInvalidDND},
		{`{"preview":"most"}`, CodeInvalidPreview},
	} {
		if r := e.do("PUT", "/user/me/push", tc.body, "alice"); r.Code != 400 || r.errCode() != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.body, r.Code, r.Body, tc.code)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused requests changed the state")
	}
	if r := e.do("PUT", "/user/me/push", `{"dnd":null}`, "alice"); r.Code != 200 || strings.Contains(string(r.Body), `"dnd"`) || !strings.Contains(string(r.Body), `"preview":"none"`) {
		t.Fatalf("dnd off: %d %s", r.Code, r.Body)
	}
	if _, _, _, ok, _ := e.svc.DND("alice"); ok {
		t.Fatal("DND still on after null")
	}
}
