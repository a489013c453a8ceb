package region_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// noisyJPEG is a photo that stays large after processing (noise does
// not compress): several chunks of MaxMediaChunk.
func noisyJPEG(t *testing.T, w, h int, seed uint64) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(seed, 1))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// uploadReady uploads body as token's user and waits until processing
// made it ready; it returns the media ID.
func uploadReady(t *testing.T, n *nodetest.Node, token, name string, body []byte) string {
	t.Helper()
	// A 503 (a leader change on a loaded machine) is sent again with
	// the upload's Idempotency-Key, as a client does: one upload.
	key := "up-" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var out struct{ MediaID string }
	nodetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		req, _ := http.NewRequest("POST", n.HTTPURL+"/media?name="+name, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "image/jpeg")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted, http.StatusOK: // 200: the retry of one that was stored
		case http.StatusServiceUnavailable:
			return fmt.Errorf("upload: %d", resp.StatusCode)
		default:
			t.Fatalf("upload: %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("upload: %v", err)
		}
		return nil
	})
	nodetest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		var info struct{ Status string }
		if code := call(t, n, token, "GET", "/media/"+out.MediaID+"/info", nil, &info); code != http.StatusOK || info.Status != "ready" {
			return fmt.Errorf("media %s: %d %s", out.MediaID, code, info.Status)
		}
		return nil
	})
	return out.MediaID
}

// download GETs path as token.
func download(t *testing.T, n *nodetest.Node, token, path string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", n.HTTPURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		r.Header.Del("Authorization") // a presigned URL of the object store carries its own
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// mustDownload is download that wants 200.
func mustDownload(t *testing.T, n *nodetest.Node, token, path string) []byte {
	t.Helper()
	code, _, b := download(t, n, token, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	return b
}

type mediaEnvelope struct {
	ID    string `json:"id"`
	From  string `json:"from"`
	To    string `json:"to"`
	Group string `json:"group"`
	Type  string `json:"type"`
	Media struct {
		ID          string `json:"id"`
		Mime        string `json:"mime"`
		Kind        string `json:"kind"`
		Name        string `json:"name"`
		Size        int64  `json:"size"`
		Width       int    `json:"width"`
		Height      int    `json:"height"`
		Placeholder string `json:"placeholder"`
		Preview     bool   `json:"preview"`
	} `json:"media"`
}

func nextMedia(t *testing.T, c *mqtttest.Client, topic string) mediaEnvelope {
	t.Helper()
	m := c.Next(t)
	var e mediaEnvelope
	if err := json.Unmarshal(m.Payload, &e); err != nil || m.Topic != topic {
		t.Fatalf("got %s %q (%v), want a message on %s", m.Topic, m.Payload, err, topic)
	}
	return e
}

func mediaMsg(cid, id string) string {
	return fmt.Sprintf(`{"cid":%q,"type":"media","media":{"id":%q},"body":"look"}`, cid, id)
}

// alice@eu sends a processed photo to bob@us: bob gets the message with
// the media metadata eu filled in, under the ID {id}@eu, and downloads
// from us, byte for byte, the processed file (whole and by range) and
// its preview, which us prefetched; after the link went down too. A
// media us could not prefetch (eu unreachable from us) answers 503
// media_unavailable with Retry-After, then is fetched on the GET once eu
// is back. Nobody else reads it, and us's ID space is untouched.
func TestMediaDirectAcrossRegions(t *testing.T) { testMediaDirect(t, 1) }

// The same with both regions' media in S3 (a MinIO; each region its own
// buckets): downloads are redirects to presigned URLs of us's bucket.
func TestMediaDirectAcrossRegionsS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	cfg := map[string]store.S3Config{"eu": m.Config("eu"), "us": m.Config("us")}
	testMediaDirect(t, 1, nodetest.WithConfig(func(c *node.Config) {
		sc := cfg[c.Region]
		c.MediaStore = node.MediaStoreS3
		c.S3Endpoint, c.S3AccessKey, c.S3SecretKey = sc.Endpoint, sc.AccessKey, sc.SecretKey
		c.S3RawBucket, c.S3ProcessedBucket, c.S3ColdBucket = sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket
	}))
}

// The same with regions of three nodes each (a local store on each
// node): the link reaches us's node 0, the bytes land on the node that
// fetched them and the others proxy to it.
func TestMediaDirectAcrossThreeNodeRegions(t *testing.T) { testMediaDirect(t, 3) }

func testMediaDirect(t *testing.T, size int, extra ...nodetest.Option) {
	eu, us := startLinked(t, size, "eu", "us", nil, nil, extra...)
	// bob reads from another node than the one the link reaches (with
	// three nodes): the bytes are on the node that fetched them.
	usReader := us.nodes[len(us.nodes)-1]
	aliceTok := eu.newUser(t, "alice")
	bobTok, carolTok := us.newUser(t, "bob"), us.newUser(t, "carol")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")

	photo := uploadReady(t, eu.nodes[0], aliceTok, "beach.jpg", noisyJPEG(t, 900, 700, 1))
	wantFile := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+photo)
	wantPreview := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+photo+"/preview")
	if len(wantFile) <= 256<<10 {
		t.Fatalf("processed photo of %d bytes: want more than one chunk", len(wantFile))
	}
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, mediaMsg("p1", photo)); code != 0 {
		t.Fatalf("media to bob@us: %#x %q", code, ack.Properties.ReasonString)
	}
	got := nextMedia(t, bob, "user/bob/newMessage")
	m := got.Media
	if got.From != "alice@eu" || got.Type != "media" || m.ID != photo+"@eu" || m.Mime != "image/jpeg" || m.Kind != "image" ||
		m.Size != int64(len(wantFile)) || m.Width != 900 || m.Height != 700 || !m.Preview || !strings.HasPrefix(m.Placeholder, "data:image/") ||
		m.Name != "beach.jpg" {
		t.Fatalf("bob got %+v", got)
	}
	// us prefetched it: the link may go down now.
	nodetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, us.nodes[0], "edgechat_media_remote_fetches_total", `result="ok"`); n != 1 {
			return fmt.Errorf("%v fetches", n)
		}
		return nil
	})
	// ... and usReader applied that (it need not be the node that
	// fetched, whose copy it then proxies to).
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if code, _, b := download(t, usReader, bobTok, "/media/"+m.ID); code != http.StatusOK || !bytes.Equal(b, wantFile) {
			return fmt.Errorf("GET on the reader: %d, %d bytes", code, len(b))
		}
		return nil
	})
	eu.in.setCut(true)
	us.in.setCut(true)
	if b := mustDownload(t, usReader, bobTok, "/media/"+m.ID); !bytes.Equal(b, wantFile) {
		t.Fatalf("bob's file: %d bytes, want the %d eu serves", len(b), len(wantFile))
	}
	if b := mustDownload(t, usReader, bobTok, "/media/"+m.ID+"/preview"); !bytes.Equal(b, wantPreview) {
		t.Fatalf("bob's preview: %d bytes, want %d", len(b), len(wantPreview))
	}
	code, hdr, part := download(t, usReader, bobTok, "/media/"+m.ID, "Range", "bytes=1000-1999")
	if code != http.StatusPartialContent || !bytes.Equal(part, wantFile[1000:2000]) || hdr.Get("ETag") == "" {
		t.Fatalf("range: %d, %d bytes, etag %q", code, len(part), hdr.Get("ETag"))
	}
	var info struct {
		Status string `json:"status"`
		Width  int    `json:"width"`
	}
	if c := call(t, usReader, bobTok, "GET", "/media/"+m.ID+"/info", nil, &info); c != http.StatusOK || info.Status != "ready" || info.Width != 900 {
		t.Fatalf("info: %d %+v", c, info)
	}
	for _, who := range []struct{ tok, path string }{{carolTok, "/media/" + m.ID}, {bobTok, "/media/" + photo}, {carolTok, "/media/" + m.ID + "/info"}} {
		if code, _, _ := download(t, usReader, who.tok, who.path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", who.path, code)
		}
	}

	// eu cannot be reached from us (its side of the link is cut) while
	// eu's link to us works: the message arrives, its bytes cannot.
	us.in.setCut(false)
	second := uploadReady(t, eu.nodes[0], aliceTok, "second.jpg", noisyJPEG(t, 300, 200, 2))
	wantSecond := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+second)
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, mediaMsg("p2", second)); code != 0 {
		t.Fatalf("second media: %#x", code)
	}
	if got := nextMedia(t, bob, "user/bob/newMessage"); got.Media.ID != second+"@eu" {
		t.Fatalf("bob got %+v", got)
	}
	// usReader may not have applied the message's media record yet (it
	// is not the node that delivered it): 404 until it has.
	var body []byte
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if code, hdr, body = download(t, usReader, bobTok, "/media/"+second+"@eu"); code == http.StatusNotFound {
			return fmt.Errorf("GET: %d (record not applied on this node yet)", code)
		}
		return nil
	})
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "media_unavailable") {
		t.Fatalf("GET while eu is unreachable: %d %q %s", code, hdr.Get("Retry-After"), body)
	}
	eu.in.setCut(false)
	nodetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		code, _, b := download(t, usReader, bobTok, "/media/"+second+"@eu")
		if code != http.StatusOK || !bytes.Equal(b, wantSecond) {
			return fmt.Errorf("GET once eu is back: %d, %d bytes", code, len(b))
		}
		return nil
	})
}

// A group homed in eu with members in us: alice@eu's photo reaches bob in
// us, and bob@us's photo reaches alice and carol in eu, each downloading
// it from their own region.
func TestMediaGroupAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, carolTok := eu.newUser(t, "alice"), eu.newUser(t, "carol")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")
	g := newGroup(t, eu.nodes[0], aliceTok, "photos", "carol", "bob@us")
	home, mirror := "group/"+g.GroupID+"/newMessage", "group/"+g.GroupID+"@eu/newMessage"
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+g.GroupID+"@eu/members", nil, nil); code != http.StatusOK {
			return fmt.Errorf("mirror in us: %d", code)
		}
		return nil
	})
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	carol := connect(t, eu.nodes[0], "carol", "phone", carolTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	alice.MustSub(t, home)
	carol.MustSub(t, home)
	bob.MustSub(t, mirror)

	// Home member to the group.
	photo := uploadReady(t, eu.nodes[0], aliceTok, "a.jpg", noisyJPEG(t, 400, 300, 3))
	want := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+photo)
	if code, ack := alice.Pub(t, home, 1, mediaMsg("g1", photo)); code != 0 {
		t.Fatalf("alice's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	nextMedia(t, alice, home)
	nextMedia(t, carol, home)
	if got := nextMedia(t, bob, mirror); got.Media.ID != photo+"@eu" || got.Media.Width != 400 || !got.Media.Preview {
		t.Fatalf("bob got %+v", got)
	}
	if b := mustDownload(t, us.nodes[0], bobTok, "/media/"+photo+"@eu"); !bytes.Equal(b, want) {
		t.Fatalf("bob's copy: %d bytes, want %d", len(b), len(want))
	}
	if code, _, _ := download(t, us.nodes[0], daveTok, "/media/"+photo+"@eu"); code != http.StatusNotFound {
		t.Fatalf("dave (not a member) read the group's media: %d", code)
	}

	// Remote member to the group homed elsewhere.
	pic := uploadReady(t, us.nodes[0], bobTok, "b.jpg", noisyJPEG(t, 320, 240, 4))
	wantPic := mustDownload(t, us.nodes[0], bobTok, "/media/"+pic)
	wantPreview := mustDownload(t, us.nodes[0], bobTok, "/media/"+pic+"/preview")
	if code, ack := bob.Pub(t, mirror, 1, mediaMsg("g2", pic)); code != 0 {
		t.Fatalf("bob's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if got := nextMedia(t, bob, mirror); got.Media.ID != pic {
		t.Fatalf("bob's own copy: %+v", got)
	}
	for _, c := range []*mqtttest.Client{alice, carol} {
		if got := nextMedia(t, c, home); got.From != "bob@us" || got.Media.ID != pic+"@us" || got.Media.Width != 320 {
			t.Fatalf("in eu: %+v", got)
		}
	}
	for _, tok := range []string{aliceTok, carolTok} {
		if b := mustDownload(t, eu.nodes[0], tok, "/media/"+pic+"@us"); !bytes.Equal(b, wantPic) {
			t.Fatalf("eu's copy: %d bytes, want %d", len(b), len(wantPic))
		}
		if b := mustDownload(t, eu.nodes[0], tok, "/media/"+pic+"@us/preview"); !bytes.Equal(b, wantPreview) {
			t.Fatalf("eu's preview: %d bytes, want %d", len(b), len(wantPreview))
		}
	}
}

// linkQuery publishes a request on topic as a query connection of
// region asker would, and returns the answer.
func linkQuery(t *testing.T, c *mqtttest.Client, topic, reply string, req any) []byte {
	t.Helper()
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	corr := []byte(fmt.Sprint(time.Now().UnixNano()))
	pr, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: b,
		Properties: &paho.PublishProperties{ResponseTopic: reply, CorrelationData: corr}})
	if err != nil {
		t.Fatalf("request on %s: %v %+v", topic, err, pr)
	}
	for {
		m := c.Next(t)
		if m.Topic == reply && m.Properties != nil && bytes.Equal(m.Properties.CorrelationData, corr) {
			return m.Payload
		}
	}
}

func chunkHeader(t *testing.T, frame []byte) (h struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}, data []byte) {
	t.Helper()
	if len(frame) < 4 {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	n := binary.BigEndian.Uint32(frame)
	if err := json.Unmarshal(frame[4:4+n], &h); err != nil {
		t.Fatal(err)
	}
	return h, frame[4+n:]
}

// A region reads only media that was sent to it: a chunk request of us
// for a media alice sent to bob@us is answered; one for a media never
// sent, or sent to a user of eu only, gets not_found as for an ID that
// does not exist; a malformed request is refused.
func TestMediaChunkRequestNotSentRefused(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	eu.newUser(t, "carol")
	us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	sent := uploadReady(t, eu.nodes[0], aliceTok, "sent.jpg", noisyJPEG(t, 64, 48, 5))
	unsent := uploadReady(t, eu.nodes[0], aliceTok, "unsent.jpg", noisyJPEG(t, 64, 48, 6))
	local := uploadReady(t, eu.nodes[0], aliceTok, "local.jpg", noisyJPEG(t, 64, 48, 7))
	for _, p := range []struct{ topic, id string }{{"user/bob@us/newMessage", sent}, {"user/carol/newMessage", local}} {
		if code, _ := alice.Pub(t, p.topic, 1, mediaMsg("c"+p.id[:4], p.id)); code != 0 {
			t.Fatalf("send %s: %#x", p.id, code)
		}
	}
	want := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+sent)

	q := mqtttest.MustDial(t, eu.nodes[0].MQTTAddr(), mqtttest.Options{ClientID: "$link/us/q/test", Username: "$link/us", Password: secret})
	reply := "$link/us/reply/test"
	q.MustSub(t, reply)
	h, data := chunkHeader(t, linkQuery(t, q, "$link/us/media", reply, map[string]any{"id": sent, "off": 0, "len": 1 << 20 / 4}))
	if h.Error != "" || h.Size != int64(len(want)) || len(h.SHA256) != 64 || !bytes.Equal(data, want[:min(len(want), 256<<10)]) {
		t.Fatalf("sent media: %+v, %d bytes", h, len(data))
	}
	for _, id := range []string{unsent, local, "abcdefghijklmnopqrstuvwx", sent + "@asia"} {
		if h, data := chunkHeader(t, linkQuery(t, q, "$link/us/media", reply, map[string]any{"id": id, "off": 0, "len": 1024})); h.Error != "not_found" || len(data) != 0 {
			t.Errorf("media %s: %+v, %d bytes; want not_found", id, h, len(data))
		}
	}
	if n := counter(t, eu.nodes[0], "edgechat_region_link_received_total", `result="media_refused"`); n != 2 {
		t.Errorf("%v refusals counted, want 2 (unsent, local)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, bad := range []string{`{"id":"x","off":0,"len":10}`, `{"id":"` + sent + `","off":-1,"len":10}`, `{"id":"` + sent + `","off":0,"len":0}`, `not json`} {
		pr, _ := q.Publish(ctx, &paho.Publish{QoS: 1, Topic: "$link/us/media", Payload: []byte(bad),
			Properties: &paho.PublishProperties{ResponseTopic: reply, CorrelationData: []byte("x")}})
		if pr == nil || pr.ReasonCode != 0x99 {
			t.Errorf("request %s: %+v, want 0x99", bad, pr)
		}
	}
}

// Chunks of 256 KiB travel over a link of MQTT over WebSocket too.
func TestMediaOverWebSocketLink(t *testing.T) {
	o := pairOpts{scheme: "ws", secret: true}
	eu, us := startPair(t, "eu", "us", nil, map[string]pairOpts{"eu": o, "us": o})
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	photo := uploadReady(t, eu.nodes[0], aliceTok, "ws.jpg", noisyJPEG(t, 900, 700, 8))
	want := mustDownload(t, eu.nodes[0], aliceTok, "/media/"+photo)
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, mediaMsg("w1", photo)); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if got := nextMedia(t, bob, "user/bob/newMessage"); got.Media.ID != photo+"@eu" {
		t.Fatalf("bob got %+v", got)
	}
	if b := mustDownload(t, us.nodes[0], bobTok, "/media/"+photo+"@eu"); !bytes.Equal(b, want) || len(want) <= 256<<10 {
		t.Fatalf("bob's copy: %d bytes, want the %d (more than a chunk) eu serves", len(b), len(want))
	}
}

// startThree starts regions eu, us and ap of one node each, every one
// linked to the two others.
func startThree(t *testing.T) (eu, us, ap *region) {
	t.Helper()
	rs := []*region{{name: "eu", in: newProxy(t)}, {name: "us", in: newProxy(t)}, {name: "ap", in: newProxy(t)}}
	file := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		var links []string
		for _, o := range rs {
			if o != r {
				links = append(links, o.name+"="+o.in.URL())
			}
		}
		r.nodes = []*nodetest.Node{nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
			c.Region, c.RegionNumber, c.Links, c.LinkSecretFile = r.name, i+1, links, file
		}))}
		r.in.setTarget(r.nodes[0].MQTTAddr())
	}
	return rs[0], rs[1], rs[2]
}

// Three regions: a group homed in eu with members in us and ap. carol@ap
// sends a photo to the group: eu (the home) stores it as {id}@ap and
// fetches it from ap; us gets it relayed by eu, still {id}@ap, and
// fetches it from eu (the region the message came from, which serves
// its copy), never from ap.
func TestMediaRelayedThroughGroupHome(t *testing.T) {
	eu, us, ap := startThree(t)
	aliceTok, bobTok, carolTok := eu.newUser(t, "alice"), us.newUser(t, "bob"), ap.newUser(t, "carol")
	g := newGroup(t, eu.nodes[0], aliceTok, "world", "bob@us", "carol@ap")
	mirror := g.GroupID + "@eu"
	for _, m := range []struct {
		r   *region
		tok string
	}{{us, bobTok}, {ap, carolTok}} {
		nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			if code := call(t, m.r.nodes[0], m.tok, "GET", "/user/groups/"+mirror+"/members", nil, nil); code != http.StatusOK {
				return fmt.Errorf("mirror in %s: %d", m.r.name, code)
			}
			return nil
		})
	}
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	carol := connect(t, ap.nodes[0], "carol", "phone", carolTok)
	alice.MustSub(t, "group/"+g.GroupID+"/newMessage")
	bob.MustSub(t, "group/"+mirror+"/newMessage")

	pic := uploadReady(t, ap.nodes[0], carolTok, "c.jpg", noisyJPEG(t, 500, 400, 9))
	want := mustDownload(t, ap.nodes[0], carolTok, "/media/"+pic)
	if code, ack := carol.Pub(t, "group/"+mirror+"/newMessage", 1, mediaMsg("r1", pic)); code != 0 {
		t.Fatalf("carol's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if got := nextMedia(t, alice, "group/"+g.GroupID+"/newMessage"); got.Media.ID != pic+"@ap" || got.From != "carol@ap" {
		t.Fatalf("alice got %+v", got)
	}
	if got := nextMedia(t, bob, "group/"+mirror+"/newMessage"); got.Media.ID != pic+"@ap" || got.From != "carol@ap" || got.Media.Width != 500 {
		t.Fatalf("bob got %+v", got)
	}
	for _, r := range []struct {
		n   *nodetest.Node
		tok string
	}{{us.nodes[0], bobTok}, {eu.nodes[0], aliceTok}} {
		if b := mustDownload(t, r.n, r.tok, "/media/"+pic+"@ap"); !bytes.Equal(b, want) {
			t.Fatalf("copy: %d bytes, want %d", len(b), len(want))
		}
	}
	// us asked eu, not ap: ap served its chunks to eu only.
	if n := counter(t, ap.nodes[0], "edgechat_region_link_received_total", `link="us",result="media_chunk"`); n != 0 {
		t.Errorf("ap served %v chunks to us", n)
	}
	if n := counter(t, eu.nodes[0], "edgechat_region_link_received_total", `link="us",result="media_chunk"`); n < 1 {
		t.Errorf("eu served %v chunks to us", n)
	}
}
