package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"sync"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The SDK's media path against a real node: upload with progress, the
// ready event, a media message the recipient renders without another
// request, the download, and a refusal.
func TestMediaThroughTheSDK(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	bb := newInbox()
	alice := dial(t, []string{n.MQTTURL}, n.HTTPURL, aliceTok, nil, nil)
	bob := dial(t, []string{n.MQTTURL}, n.HTTPURL, bobTok, bb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	img := image.NewRGBA(image.Rect(0, 0, 120, 80))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var progress []int64
	info, err := alice.UploadMedia(ctx, bytes.NewReader(buf.Bytes()), int64(buf.Len()), "chart.png", "image/png",
		func(sent, total int64) {
			mu.Lock()
			progress = append(progress, sent)
			mu.Unlock()
		})
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != edgechat.MediaImage || info.Width != 120 || info.Height != 80 || info.Mime != "image/png" || !info.Preview {
		t.Fatalf("uploaded %+v", info)
	}
	mu.Lock()
	if len(progress) == 0 || progress[len(progress)-1] != int64(buf.Len()) {
		t.Errorf("progress %v, want it to reach %d", progress, buf.Len())
	}
	mu.Unlock()

	m, err := alice.SendMedia(ctx, "bob", info, "the chart")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, m.ID)
	bb.mu.Lock()
	var got edgechat.Message
	for _, x := range bb.msgs {
		if x.ID == m.ID {
			got = x
		}
	}
	bb.mu.Unlock()
	if got.Media == nil || got.Media.ID != info.ID || got.Media.Width != 120 || got.Media.Name != "chart.png" || got.Body != "the chart" {
		t.Fatalf("bob got %+v (media %+v)", got, got.Media)
	}
	var out bytes.Buffer
	size, err := bob.DownloadMedia(ctx, info.ID, &out, false)
	if err != nil || size != int64(out.Len()) {
		t.Fatalf("download: %d, %v", size, err)
	}
	if dec, err := png.Decode(&out); err != nil || dec.Bounds().Dx() != 120 {
		t.Fatalf("downloaded image: %v", err)
	}

	// A refusal comes back as a typed error.
	elf := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, make([]byte, 100)...)
	_, err = alice.UploadMedia(ctx, bytes.NewReader(elf), int64(len(elf)), "cat.png", "image/png", nil)
	var rej *edgechat.MediaRejectedError
	if !errors.As(err, &rej) || rej.Reason != "executable" {
		t.Fatalf("ELF upload: %v", err)
	}
}
