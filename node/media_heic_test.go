package node_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// An iPhone's HEIC photo is served without its EXIF and XMP items: no
// HEIC decoder is built in, so it is served as the file it is, and its
// EXIF (GPS location, camera serial) and XMP reached everyone it was
// sent to. The items' bytes are blanked in place; the picture's items
// are untouched.
func TestAHEICPhotoIsServedWithoutItsLocation(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := newMediaUser(t, n, "alice"), newMediaUser(t, n, "bob")
	const (
		gps = "GPSLatitude=48.8584"
		xmp = "<rdf:RDF>exif:GPSLongitude 2.2945</rdf:RDF>"
		img = "the coded picture"
	)
	photo := heicWithMetadata(gps, xmp, img)
	id := upload(t, n, alice.token, "IMG_0001.HEIC", "image/heic", photo)
	if ev := alice.outcome(t, id); ev.Type != "mediaReady" || ev.Media["mime"] != "image/heic" {
		t.Fatalf("the HEIC photo: %+v", ev)
	}
	sendMedia(t, alice, "bob", "heic", id)
	st, _, body := get(t, n, bob.token, "/media/"+id, nil)
	if st != 200 || len(body) != len(photo) {
		t.Fatalf("bob's download: %d, %d bytes of %d", st, len(body), len(photo))
	}
	for _, leak := range []string{gps, "GPSLongitude"} {
		if bytes.Contains(body, []byte(leak)) {
			t.Errorf("the served photo still holds %q", leak)
		}
	}
	if !bytes.Contains(body, []byte(img)) {
		t.Error("the served photo lost its picture")
	}
}

// heicWithMetadata is a HEIF file of three items, a picture (hvc1), an
// Exif item holding gps and an XMP item holding xmp, all in mdat and
// located by an iloc of version 1 (construction method 0).
func heicWithMetadata(gps, xmp, picture string) []byte {
	be := binary.BigEndian
	box := func(typ string, body ...[]byte) []byte {
		b := make([]byte, 8)
		copy(b[4:], typ)
		for _, x := range body {
			b = append(b, x...)
		}
		be.PutUint32(b, uint32(len(b)))
		return b
	}
	infe := func(id uint16, typ, name, ctype string) []byte {
		b := []byte{2, 0, 0, 0}
		b = be.AppendUint16(b, id)
		b = be.AppendUint16(b, 0)
		b = append(append(append(b, typ...), name...), 0)
		if ctype != "" {
			b = append(append(b, ctype...), 0)
		}
		return box("infe", b)
	}
	exif := append([]byte{0, 0, 0, 6}, "Exif\x00\x00MM\x00*"+gps...)
	items := [][]byte{[]byte(picture), exif, []byte(xmp)}
	iloc := func(mdatData uint32) []byte {
		b := []byte{1, 0, 0, 0, 0x44, 0x00} // version 1; offsets and lengths of 4 bytes, no base offset, no index
		b = be.AppendUint16(b, uint16(len(items)))
		off := mdatData
		for i, it := range items {
			b = be.AppendUint16(b, uint16(i+1))
			b = be.AppendUint16(b, 0) // construction method 0: file offsets
			b = be.AppendUint16(b, 0) // data reference index
			b = be.AppendUint16(b, 1) // one extent
			b = be.AppendUint32(b, off)
			b = be.AppendUint32(b, uint32(len(it)))
			off += uint32(len(it))
		}
		return box("iloc", b)
	}
	iinf := box("iinf", []byte{0, 0, 0, 0, 0, 3}, infe(1, "hvc1", "", ""), infe(2, "Exif", "", ""),
		infe(3, "mime", "XMP", "application/rdf+xml"))
	ftyp := box("ftyp", []byte("heic\x00\x00\x00\x00mif1heic"))
	meta := func(mdatData uint32) []byte {
		return box("meta", []byte{0, 0, 0, 0}, box("hdlr", []byte("\x00\x00\x00\x00\x00\x00\x00\x00pict\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")),
			iinf, iloc(mdatData))
	}
	data := uint32(len(ftyp) + len(meta(0)) + 8)
	return bytes.Join([][]byte{ftyp, meta(data), box("mdat", bytes.Join(items, nil))}, nil)
}
