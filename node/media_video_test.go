package node_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A phone video's container metadata does not reach its recipients on
// a node without ffmpeg (the shipped container image has none): the
// location an Android phone writes (moov/udta/©xyz), the one an iPhone
// writes (moov/meta), a track's udta and an XMP uuid box were served as
// uploaded, so whoever got the video learned where it was shot.
func TestAVideoIsServedWithoutItsLocation(t *testing.T) {
	n := nodetest.StartNode(t) // no ffmpeg on the PATH of the tests' machines (the node skips it when absent)
	alice, bob := newMediaUser(t, n, "alice"), newMediaUser(t, n, "bob")
	const (
		android = "+48.8584+002.2945/"
		iphone  = "+40.6892-074.0445+010.000/"
		serial  = "CAMSERIAL-0042"
		xmp     = "<x:xmpmeta>GPSLatitude 51.5007</x:xmpmeta>"
	)
	video := mp4WithLocation(android, iphone, serial, xmp)
	id := upload(t, n, alice.token, "VID_0001.mp4", "video/mp4", video)
	ev := alice.outcome(t, id)
	if ev.Type != "mediaReady" || ev.Media["kind"] != "video" || ev.Media["durationMs"] != float64(2500) {
		t.Fatalf("the video: %+v", ev)
	}
	sendMedia(t, alice, "bob", "vid", id)
	st, _, body := get(t, n, bob.token, "/media/"+id, nil)
	if st != 200 || len(body) != len(video) {
		t.Fatalf("bob's download: %d, %d bytes of %d", st, len(body), len(video))
	}
	for _, leak := range []string{android, iphone, serial, "GPSLatitude"} {
		if bytes.Contains(body, []byte(leak)) {
			t.Errorf("the served video still holds %q", leak)
		}
	}
	// What plays is untouched: the movie header, the track and the media data.
	for _, keep := range [][]byte{[]byte("mvhd"), []byte("tkhd"), []byte("frames of a video")} {
		if !bytes.Contains(body, keep) {
			t.Errorf("the served video lost %q", keep)
		}
	}
}

// mp4WithLocation is an MP4 of 2.5 s whose movie and track carry what
// phones write: an Android ©xyz location in moov/udta, an iPhone
// location in moov/meta, a camera serial in the track's udta and an XMP
// packet in a top-level uuid box.
func mp4WithLocation(android, iphone, serial, xmp string) []byte {
	box := func(typ string, body ...[]byte) []byte {
		b := make([]byte, 8)
		copy(b[4:], typ)
		for _, x := range body {
			b = append(b, x...)
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)))
		return b
	}
	be := binary.BigEndian
	mvhd := make([]byte, 100)
	be.PutUint32(mvhd[12:], 1000) // time scale
	be.PutUint32(mvhd[16:], 2500) // duration
	tkhd := make([]byte, 84)
	tkhd[3] = 3
	be.PutUint32(tkhd[40:], 0x10000)
	be.PutUint32(tkhd[56:], 0x10000)
	be.PutUint32(tkhd[72:], 0x40000000)
	be.PutUint32(tkhd[76:], 640<<16)
	be.PutUint32(tkhd[80:], 360<<16)
	xyz := append([]byte{0, byte(len(android)), 0x15, 0xc7}, android...)
	meta := box("meta", []byte{0, 0, 0, 0}, box("hdlr", make([]byte, 24)), box("keys", []byte("com.apple.quicktime.location.ISO6709")),
		box("ilst", box("\x00\x00\x00\x01", box("data", []byte{0, 0, 0, 1, 0, 0, 0, 0}, []byte(iphone)))))
	uuid := box("uuid", []byte("\xbe\x7a\xcf\xcb\x97\xa9\x42\xe8\x9c\x71\x99\x94\x91\xe3\xaf\xac"), []byte(xmp))
	return bytes.Join([][]byte{
		box("ftyp", []byte("isom\x00\x00\x02\x00isomiso2mp41")),
		box("moov", box("mvhd", mvhd), box("trak", box("tkhd", tkhd), box("udta", box("cams", []byte(serial)))),
			box("udta", box("\xa9xyz", xyz)), meta),
		uuid,
		box("mdat", []byte("frames of a video")),
	}, nil)
}
