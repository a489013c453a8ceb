package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// noisyJPEG is a w×h JPEG of noise: big to decode and scale, so that
// processing takes long enough to stop a node in the middle of it.
func noisyJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	x := uint32(2463534242)
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = byte(x)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A worker stopped in the middle of a job: once its lease ends another
// node's worker takes the job over and finishes it, once — one ready
// record, one mediaReady event on each of the uploader's devices.
func TestMediaJobSurvivesItsWorkerStopping(t *testing.T) {
	m := storetest.StartMinIO(t)
	sc := m.Config("kill")
	nodes := nodetest.StartCluster(t, 3, withMinIO(m, "kill"), nodetest.WithConfig(func(c *node.Config) {
		c.S3RawBucket, c.S3ProcessedBucket, c.S3ColdBucket = sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket
		c.MediaJobLease = 2 * time.Second
	}))
	tok := nodes[0].NewUser(t, "alice")
	// One device on each node: whichever node stops, two keep listening.
	devices := make([]*mqtttest.Client, len(nodes))
	for i, n := range nodes {
		devices[i] = mustConnectV5(t, n.MQTTAddr(), "alice", fmt.Sprint("d", i), tok)
		devices[i].MustSub(t, "user/alice/events")
	}
	id := upload(t, nodes[0], tok, "big.jpg", "image/jpeg", noisyJPEG(t, 4000, 3000))

	var worker int
	testutil.CheckFor(t, 20*time.Second, time.Millisecond, func() error {
		rec, err := nodes[0].Media.Get(id)
		if err != nil || rec.Job == nil {
			return errors.New("not claimed yet")
		}
		if rec.Status != media.StatusProcessing {
			return fmt.Errorf("status %s before the stop: processing was too fast", rec.Status)
		}
		worker = int(rec.Job.Node[1] - '1')
		return nil
	})
	stopped := nodes[worker]
	if err := stopped.Stop(); err != nil {
		t.Fatal(err)
	}
	alive := nodes[(worker+1)%3]
	var done media.Record
	// Generous: the lease (2 s), then a 4000x3000 JPEG decoded and resized
	// again on another node, under -race on a loaded 2-core machine.
	testutil.CheckFor(t, 150*time.Second, 20*time.Millisecond, func() error {
		rec, err := alive.Media.Get(id)
		if err != nil || rec.Status != media.StatusReady {
			return fmt.Errorf("status %q, %v", rec.Status, err)
		}
		done = rec
		return nil
	})
	if done.Node == stopped.Config.NodeID {
		t.Fatalf("the stopped node %s finished the job", done.Node)
	}
	for i, d := range devices {
		if i == worker {
			continue
		}
		testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if n := readyEvents(d, id); n != 1 {
				return fmt.Errorf("device d%d got %d mediaReady events", i, n)
			}
			return nil
		})
	}
	time.Sleep(time.Second) // a late second finish would show now
	for i, d := range devices {
		if i != worker && readyEvents(d, id) != 1 {
			t.Errorf("device d%d: %d mediaReady events", i, readyEvents(d, id))
		}
	}
}

func readyEvents(c *mqtttest.Client, id string) int {
	n := 0
	for _, m := range c.Received("user/alice/events") {
		var e mediaEvent
		if json.Unmarshal(m.Payload, &e) == nil && e.MediaID == id && e.Type == "mediaReady" {
			n++
		}
	}
	return n
}

// With the local store a node serves what it holds and fetches the rest
// from the node that holds it.
func TestMediaLocalStoreServedFromAnyNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	alice := newMediaUser(t, n1, "alice")
	bobTok := n1.NewUser(t, "bob")
	id := upload(t, n1, alice.token, "pic.png", "image/png", pngBytes(t, halves(50, 30)))
	if ev := alice.outcome(t, id); ev.Type != "mediaReady" {
		t.Fatalf("%+v", ev)
	}
	code, _ := alice.c.Pub(t, "user/bob/newMessage", 1, fmt.Sprintf(`{"cid":"x","type":"media","media":{"id":%q}}`, id))
	if code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	st1, _, direct := get(t, n1, bobTok, "/media/"+id, nil)
	var st2 int
	var proxied []byte
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st2, _, proxied = get(t, n2, bobTok, "/media/"+id, map[string]string{"Range": "bytes=1-"})
		if st2 != 206 {
			return fmt.Errorf("n2 answered %d", st2) // n2 may not have applied the grant yet
		}
		return nil
	})
	if st1 != 200 || !bytes.Equal(proxied, direct[1:]) {
		t.Fatalf("n1 %d (%d bytes), n2 %d (%d bytes)", st1, len(direct), st2, len(proxied))
	}
	// A stranger gets nothing through the proxy either.
	carol := n2.NewUser(t, "carol")
	if st, _, _ := get(t, n2, carol, "/media/"+id, nil); st != 404 {
		t.Fatalf("stranger through n2: %d", st)
	}
}
