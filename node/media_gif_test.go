package node_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A GIF larger than --media-max-dimension (2560) is served scaled down
// like every other picture: it was served at its own size, up to a
// canvas of 50 megapixels (a few hundred bytes of GIF whose one frame
// is a single pixel), which every recipient's app decoded to hundreds
// of megabytes a frame when it showed the message.
func TestAGIFLargerThanTheMaxDimensionIsScaledDown(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := newMediaUser(t, n, "alice"), newMediaUser(t, n, "bob")
	g := &gif.GIF{Config: image.Config{Width: 6000, Height: 3000, ColorModel: color.Palette(palette.Plan9)}}
	for i := range 2 {
		m := image.NewPaletted(image.Rect(0, 0, 6000, 3000), palette.Plan9)
		for p := range m.Pix {
			m.Pix[p] = uint8(10 + 40*i)
		}
		g.Image = append(g.Image, m)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	id := upload(t, n, alice.token, "big.gif", "image/gif", b.Bytes())
	ev := alice.outcome(t, id)
	if ev.Type != "mediaReady" {
		t.Fatalf("the big GIF: %+v", ev)
	}
	sendMedia(t, alice, "bob", "gif", id)
	st, hdr, body := get(t, n, bob.token, "/media/"+id, nil)
	if st != 200 {
		t.Fatalf("bob's download: %d", st)
	}
	c, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil || max(c.Width, c.Height) > 2560 || ev.Media["width"] != float64(c.Width) || ev.Media["height"] != float64(c.Height) {
		t.Fatalf("served %s %d×%d (%v, %s), announced %v×%v; want its longest side at most 2560", format, c.Width, c.Height, err,
			hdr.Get("Content-Type"), ev.Media["width"], ev.Media["height"])
	}
}

// sendMedia sends media id from u to the user to, with cid.
func sendMedia(t *testing.T, u *mediaUser, to, cid, id string) {
	t.Helper()
	code, _ := u.c.Pub(t, "user/"+to+"/newMessage", 1, fmt.Sprintf(`{"cid":%q,"type":"media","media":{"id":%q}}`, cid, id))
	if code != 0 {
		t.Fatalf("media message: PUBACK %#x", code)
	}
}
