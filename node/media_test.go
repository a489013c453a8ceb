package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// mediaUser is a user with an MQTT connection that listens to its events.
type mediaUser struct {
	name, token string
	c           *mqtttest.Client
}

func newMediaUser(t *testing.T, n *nodetest.Node, name string) *mediaUser {
	t.Helper()
	u := &mediaUser{name: name, token: n.NewUser(t, name)}
	u.c = mustConnectV5(t, n.MQTTAddr(), name, "laptop", u.token)
	u.c.MustSub(t, "user/"+name+"/events", "user/"+name+"/newMessage")
	return u
}

// upload posts body as a raw upload and returns the media ID.
func upload(t *testing.T, n *nodetest.Node, token, name, ctype string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest("POST", n.HTTPURL+"/media?name="+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ MediaID, Status string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 202 || out.Status != "processing" {
		t.Fatalf("upload %s: %d %+v %v", name, resp.StatusCode, out, err)
	}
	return out.MediaID
}

type mediaEvent struct {
	Type    string         `json:"type"`
	MediaID string         `json:"mediaId"`
	Reason  string         `json:"reason"`
	Media   map[string]any `json:"media"`
}

// outcome waits for the mediaReady or mediaRejected event of id.
func (u *mediaUser) outcome(t *testing.T, id string) mediaEvent {
	t.Helper()
	var ev mediaEvent
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, m := range u.c.Received("user/" + u.name + "/events") {
			var e mediaEvent
			if json.Unmarshal(m.Payload, &e) == nil && e.MediaID == id {
				ev = e
				return nil
			}
		}
		return fmt.Errorf("no outcome for %s yet", id)
	})
	return ev
}

// get downloads path as token, following a redirect to the object store
// without the bearer token; it returns the status, headers and body.
func get(t *testing.T, n *nodetest.Node, token, path string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", n.HTTPURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		r.Header.Del("Authorization") // a presigned URL carries its own
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

func withMediaStore(kind string, extra func(c *node.Config)) nodetest.Option {
	return nodetest.WithConfig(func(c *node.Config) {
		c.MediaStore = kind
		if extra != nil {
			extra(c)
		}
	})
}

func TestMediaPipelineLocalStore(t *testing.T) {
	n := nodetest.StartNode(t)
	testMediaPipeline(t, n)
}

// testMediaPipeline is the whole path through one node: upload,
// processing, refusals, sending, reading.
func testMediaPipeline(t *testing.T, n *nodetest.Node) {
	alice, bob := newMediaUser(t, n, "alice"), newMediaUser(t, n, "bob")
	carol := n.NewUser(t, "carol")

	// A phone photo: upright, no metadata, a preview and a placeholder.
	photo := upload(t, n, alice.token, "IMG_0042.jpg", "image/jpeg", jpegWithGPS(t, 64, 32))
	ev := alice.outcome(t, photo)
	if ev.Type != "mediaReady" || ev.Media["mime"] != "image/jpeg" || ev.Media["width"] != float64(32) ||
		ev.Media["height"] != float64(64) || ev.Media["preview"] != true ||
		!strings.HasPrefix(fmt.Sprint(ev.Media["placeholder"]), "data:image/") {
		t.Fatalf("photo: %+v", ev)
	}
	// Not sent yet: only alice reads it.
	if st, _, _ := get(t, n, bob.token, "/media/"+photo, nil); st != 404 {
		t.Fatalf("bob read media never sent to him: %d", st)
	}
	code, _ := alice.c.Pub(t, "user/bob/newMessage", 1,
		fmt.Sprintf(`{"cid":"m1","type":"media","media":{"id":%q},"body":"the view"}`, photo))
	if code != 0 {
		t.Fatalf("media message: PUBACK %#x", code)
	}
	var delivered map[string]any
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, m := range bob.c.Received("user/bob/newMessage") {
			var env map[string]any
			if json.Unmarshal(m.Payload, &env) == nil && env["type"] == "media" {
				delivered = env
				return nil
			}
		}
		return fmt.Errorf("bob has no media message")
	})
	dm, _ := delivered["media"].(map[string]any)
	if dm["id"] != photo || dm["name"] != "IMG_0042.jpg" || dm["width"] != float64(32) || dm["kind"] != "image" {
		t.Fatalf("delivered media %+v", delivered)
	}
	st, hdr, body := get(t, n, bob.token, "/media/"+photo, nil)
	if st != 200 || hdr.Get("Content-Type") != "image/jpeg" || hdr.Get("ETag") == "" {
		t.Fatalf("bob's download: %d %v", st, hdr)
	}
	for _, leak := range []string{"Exif", "GPSCam", "http://ns.adobe.com/xap"} {
		if bytes.Contains(body, []byte(leak)) {
			t.Errorf("the served photo still holds %q", leak)
		}
	}
	img, format, err := image.Decode(bytes.NewReader(body))
	if err != nil || format != "jpeg" || img.Bounds().Dx() != 32 || img.Bounds().Dy() != 64 {
		t.Fatalf("served photo: %v %s %v", img.Bounds(), format, err)
	}
	// Orientation 6 turns the red left half to the top.
	if r, _, b, _ := img.At(16, 4).RGBA(); r < b {
		t.Errorf("the photo is not upright: top pixel r=%d b=%d", r>>8, b>>8)
	}
	if r, _, b, _ := img.At(16, 60).RGBA(); b < r {
		t.Errorf("the photo is not upright: bottom pixel r=%d b=%d", r>>8, b>>8)
	}
	st, hdr, part := get(t, n, bob.token, "/media/"+photo, map[string]string{"Range": "bytes=0-9"})
	if st != http.StatusPartialContent || !bytes.Equal(part, body[:10]) ||
		hdr.Get("Content-Range") != fmt.Sprintf("bytes 0-9/%d", len(body)) {
		t.Fatalf("range: %d %v", st, hdr)
	}
	if st, _, p := get(t, n, bob.token, "/media/"+photo+"/preview", nil); st != 200 || len(p) == 0 {
		t.Fatalf("preview: %d", st)
	}
	if st, _, _ := get(t, n, carol, "/media/"+photo, nil); st != 404 {
		t.Fatalf("a stranger got %d", st)
	}

	// The claimed type and name are hints: a PNG named .jpg is a PNG.
	lying := upload(t, n, alice.token, "fake.jpg", "image/jpeg", pngBytes(t, halves(40, 20)))
	if ev := alice.outcome(t, lying); ev.Type != "mediaReady" || ev.Media["mime"] != "image/png" {
		t.Errorf("PNG named .jpg: %+v", ev)
	}
	// Refusals.
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		reason      string
	}{
		{"innocent.png", "image/png", elfBinary(), "executable"},
		{"huge.png", "image/png", pngBomb(50000, 50000), "too_many_pixels"},
		{"eicar.txt", "text/plain", []byte(eicar), "infected"},
	} {
		id := upload(t, n, alice.token, tc.name, tc.ctype, tc.body)
		if ev := alice.outcome(t, id); ev.Type != "mediaRejected" || ev.Reason != tc.reason {
			t.Errorf("%s: %+v, want rejected for %s", tc.name, ev, tc.reason)
		}
		code, _ := alice.c.Pub(t, "user/bob/newMessage", 1,
			fmt.Sprintf(`{"cid":"r-%s","type":"media","media":{"id":%q}}`, tc.name, id))
		if code != 0x99 {
			t.Errorf("sending rejected media %s: PUBACK %#x, want 0x99", tc.name, code)
		}
	}
	// Someone else's upload cannot be sent.
	var sent struct{}
	if st := api(t, n, bob.token, "POST", "/chat/messages", map[string]any{"to": "alice", "cid": "steal",
		"type": "media", "media": map[string]string{"id": photo}}, &sent); st != 422 {
		t.Errorf("bob sent alice's upload: %d, want 422", st)
	}
}

// A 30 MB upload is refused at 25 MB while it streams: the node never
// holds it in memory.
func TestMediaOversizedUploadIsRefusedWhileStreaming(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "alice")
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	const size = 30 << 20
	req, _ := http.NewRequest("POST", n.HTTPURL+"/media?name=big.bin", io.LimitReader(zeroReader{}, size))
	req.ContentLength = -1 // streamed: the node cannot refuse it up front
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n")
		_, _ = io.Copy(pw, io.LimitReader(zeroReader{}, size))
		_, _ = io.WriteString(pw, "\r\n--B--\r\n")
		pw.Close()
	}()
	req.Body = pr
	resp, err := http.DefaultClient.Do(req)
	close(stop)
	wg.Wait()
	if err == nil {
		defer resp.Body.Close()
	}
	if err == nil && resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("30 MB upload: %d, want 413", resp.StatusCode)
	}
	if grew := int64(peak.Load()) - int64(base.HeapInuse); grew > 12<<20 {
		t.Errorf("the heap grew by %d MB while refusing a 30 MB upload", grew>>20)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
