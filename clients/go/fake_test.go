package edgechat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
)

// fakeJWT builds an unsigned token whose payload names sub; the SDK only
// reads the payload and the fake server only reads sub.
func fakeJWT(sub string) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(payload) + ".sig"
}

type fakeAction struct {
	refuse          byte // negative PUBACK reason code, 0 for none
	dropAfterCommit bool // store, then cut the connection before the PUBACK
	noEcho          bool // store and ack, but deliver no copy
}

// fakeServer is a minimal edgechat node: a mochi broker whose hook stores
// direct messages (deduplicated by sender and cid), stamps IDs and
// delivers copies, plus /chat/sync over the stored messages. The cursor is
// the count of the user's messages already seen.
type fakeServer struct {
	mqtt.HookBase
	t       testing.TB
	srv     *mqtt.Server
	ln      net.Listener
	http    *httptest.Server
	gen     *snowflake.Generator
	tcpURL  string
	httpURL string

	mu        sync.Mutex
	byUser    map[string][]Message
	byCID     map[string]Message
	attempts  map[string]int
	decide    func(cid string, attempt int) fakeAction
	denyAuth  bool
	syncCalls int
	conns     []net.Conn
	paused    bool // refuse new connections (close them at once)
	// media serves /media/... when set (see media_test.go).
	media http.Handler
	// mediaFill gives the description the server puts into a media
	// message; false refuses the message as the server does a media ID
	// that is not a ready upload of the sender.
	mediaFill   func(from, id string) (MediaInfo, bool)
	lastPayload []byte // the newest newMessage payload as published
	// subAnswers are the SUBACK codes the next SUBSCRIBEs of a filter get
	// (one per SUBSCRIBE, then granted), and subAsked counts them.
	subAnswers map[string][]byte
	subAsked   map[string]int
	// subCuts cuts the connection of the next SUBSCRIBEs of a filter
	// (that many) before their SUBACK.
	subCuts map[string]int
	// subHold holds the SUBACK of the next SUBSCRIBE of a filter until
	// the channel is closed (once), telling subHeld first.
	subHold map[string]chan struct{}
	subHeld chan string
	// groups are each user's groups, served at /user/groups; trace
	// records "sub:{filter}" and "sync:{user}" in order.
	groups map[string][]string
	trace  []string
	// routes serve more HTTP paths (after the token check); refused
	// tokens are refused at CONNECT (revoked).
	routes  map[string]http.HandlerFunc
	refused map[string]bool
}

func (f *fakeServer) set(fn func(f *fakeServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func newFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, byUser: map[string][]Message{}, byCID: map[string]Message{}, attempts: map[string]int{}}
	f.gen, _ = snowflake.NewGenerator(1)
	f.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: testutil.QuietLogger()})
	if err := f.srv.AddHook(f, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	f.tcpURL = "tcp://" + ln.Addr().String()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			paused := f.paused
			if !paused {
				f.conns = append(f.conns, conn)
			}
			f.mu.Unlock()
			if paused {
				_ = conn.Close()
				continue
			}
			go func() { _ = f.srv.EstablishConnection("t", conn) }()
		}
	}()
	f.http = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	f.httpURL = f.http.URL
	t.Cleanup(func() {
		_ = ln.Close()
		f.http.Close()
		_ = f.srv.Close()
	})
	return f
}

func (f *fakeServer) ID() string { return "fake-chat" }

func (f *fakeServer) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnUnsubscribed}, []byte{b})
}

// OnUnsubscribed records "unsub:{filter}" in trace.
func (f *fakeServer) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sub := range pk.Filters {
		f.trace = append(f.trace, "unsub:"+sub.Filter)
	}
}

// OnSubscribed answers a filter with its next subAnswers code (mochi
// builds the SUBACK from reasonCodes after this hook, as edgechat's
// broker relies on too).
func (f *fakeServer) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	f.mu.Lock()
	var holds []chan struct{}
	for _, sub := range pk.Filters {
		if h := f.subHold[sub.Filter]; h != nil {
			delete(f.subHold, sub.Filter)
			holds = append(holds, h)
			f.subHeld <- sub.Filter
		}
	}
	f.mu.Unlock()
	for _, h := range holds {
		<-h
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, sub := range pk.Filters {
		if f.subAsked == nil {
			f.subAsked = map[string]int{}
		}
		f.subAsked[sub.Filter]++
		f.trace = append(f.trace, "sub:"+sub.Filter)
		if next := f.subAnswers[sub.Filter]; len(next) > 0 && i < len(reasonCodes) {
			reasonCodes[i], f.subAnswers[sub.Filter] = next[0], next[1:]
		}
		if f.subCuts[sub.Filter] > 0 {
			f.subCuts[sub.Filter]--
			_ = cl.Net.Conn.Close()
		}
	}
}

func (f *fakeServer) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.denyAuth || f.refused[string(pk.Connect.Password)] {
		return false
	}
	sub, err := TokenSubject(string(pk.Connect.Password))
	return err == nil && sub == string(pk.Connect.Username) && strings.HasPrefix(cl.ID, sub+"/")
}

func (f *fakeServer) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }

func (f *fakeServer) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	parts := strings.Split(pk.TopicName, "/")
	if len(parts) != 3 || parts[0] != "user" || parts[2] != "newMessage" {
		return pk, nil
	}
	from, to := string(cl.Properties.Username), parts[1]
	var in Message
	if err := json.Unmarshal(pk.Payload, &in); err != nil || in.CID == "" {
		return pk, packets.ErrPayloadFormatInvalid
	}
	f.mu.Lock()
	f.lastPayload = append([]byte(nil), pk.Payload...)
	if in.Type == "media" {
		var info MediaInfo
		ok := in.Media != nil && f.mediaFill != nil
		if ok {
			info, ok = f.mediaFill(from, in.Media.ID)
		}
		if !ok {
			f.mu.Unlock()
			return pk, packets.Code{Code: 0x99, Reason: "media not ready"}
		}
		in.Media = &info
	}
	f.attempts[in.CID]++
	act := fakeAction{}
	if f.decide != nil {
		act = f.decide(in.CID, f.attempts[in.CID])
	}
	if act.refuse != 0 {
		f.mu.Unlock()
		return pk, packets.Code{Code: act.refuse, Reason: "fake refusal"}
	}
	m, dup := f.byCID[from+"/"+in.CID]
	if !dup {
		m = Message{ID: f.gen.Next().String(), From: from, To: to, CID: in.CID, Type: in.Type, Body: in.Body, Media: in.Media}
		m.Time = IDTime(m.ID)
		f.byCID[from+"/"+in.CID] = m
		f.byUser[to] = append(f.byUser[to], m)
		if from != to {
			f.byUser[from] = append(f.byUser[from], m)
		}
	}
	f.mu.Unlock()
	if !dup && !act.noEcho {
		f.deliver(m)
	}
	if act.dropAfterCommit {
		_ = cl.Net.Conn.Close()
		return pk, packets.ErrRejectPacket
	}
	if dup {
		return pk, packets.CodeSuccessIgnore // acknowledged, nothing more
	}
	// As the server's: the PUBACK of a newly stored message carries its
	// id and from (Ignore: delivered above, not by mochi).
	pk.Properties = packets.Properties{User: []packets.UserProperty{{Key: "id", Val: m.ID}, {Key: "from", Val: from}}}
	pk.Ignore = true
	return pk, nil
}

func (f *fakeServer) deliver(m Message) {
	b, _ := json.Marshal(m)
	_ = f.srv.Publish("user/"+m.To+"/newMessage", b, false, 1)
	if m.From != m.To {
		_ = f.srv.Publish("user/"+m.From+"/newMessage", b, false, 1)
	}
}

// store commits a message without delivering it live, as if it had been
// sent while the user was disconnected.
func (f *fakeServer) store(from, to, body string) Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := Message{ID: f.gen.Next().String(), From: from, To: to, CID: NewCID(), Type: "text", Body: body}
	m.Time = IDTime(m.ID)
	f.byUser[to] = append(f.byUser[to], m)
	f.byUser[from] = append(f.byUser[from], m)
	return m
}

// storeAt is store with an ID made at a given time (a message from
// before a client's Dial).
func (f *fakeServer) storeAt(from, to, body string, at time.Time) Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := snowflake.Make(uint64(at.Sub(snowflake.Epoch).Milliseconds()), 2, 0).String()
	m := Message{ID: id, From: from, To: to, CID: NewCID(), Type: "text", Body: body, Time: IDTime(id)}
	f.byUser[to] = append(f.byUser[to], m)
	f.byUser[from] = append(f.byUser[from], m)
	return m
}

func (f *fakeServer) stored(user string) []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Message(nil), f.byUser[user]...)
}

// cutAll closes every client connection from the server side.
func (f *fakeServer) cutAll() {
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (f *fakeServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	user, err := TokenSubject(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, `{"error":{"code":"unauthorized","message":"bad token"}}`)
		return
	}
	f.mu.Lock()
	media, route := f.media, f.routes[r.URL.Path]
	f.mu.Unlock()
	if route != nil {
		route(w, r)
		return
	}
	if media != nil && (r.URL.Path == "/media" || strings.HasPrefix(r.URL.Path, "/media/")) {
		media.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/user/groups" {
		f.mu.Lock()
		var list []map[string]string
		for _, gid := range f.groups[user] {
			list = append(list, map[string]string{"groupId": gid})
		}
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"groups": list})
		return
	}
	if r.URL.Path != "/chat/sync" {
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"error":{"code":"not_found","message":"no such path"}}`)
		return
	}
	since, _ := strconv.Atoi(r.URL.Query().Get("since"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 2 {
		limit = 2 // tiny pages so that paging is exercised
	}
	f.mu.Lock()
	f.syncCalls++
	f.trace = append(f.trace, "sync:"+user)
	all := f.byUser[user]
	if since > len(all) {
		since = len(all)
	}
	end := min(since+limit, len(all))
	page := append([]Message{}, all[since:end]...)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"messages": page, "cursor": strconv.Itoa(end), "hasMore": end < len(all)})
}

// recorder collects callbacks.
type recorder struct {
	mu        sync.Mutex
	msgs      []Message
	perID     map[string]int
	conn      []bool
	presences []Presence
}

func newRecorder() *recorder { return &recorder{perID: map[string]int{}} }

func (r *recorder) onMessage(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.perID[m.ID]++
}

func (r *recorder) onConn(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = append(r.conn, up)
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perID[id]
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.Body)
	}
	return out
}

func (r *recorder) waitCount(t testing.TB, id string, want int) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := r.count(id); n != want {
			return fmt.Errorf("message %s seen %d times, want %d", id, n, want)
		}
		return nil
	})
}
