package region

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

const testMediaID = "abcdefghijklmnopqrstuvwx"

func TestChunkFrameRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 1000)
	c, err := parseChunk(encodeChunk(chunkHeader{Size: 5000, SHA256: strings.Repeat("a", 64), MIME: "image/jpeg", ETag: "e"}, data))
	if err != nil || c.Size != 5000 || c.MIME != "image/jpeg" || c.ETag != "e" || !bytes.Equal(c.Data, data) {
		t.Fatalf("round trip: %+v, %v", c, err)
	}
	if _, err := parseChunk(encodeChunk(chunkHeader{Error: "not_found"}, nil)); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("not_found: %v", err)
	}
	if _, err := parseChunk(encodeChunk(chunkHeader{Error: "unavailable"}, nil)); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
	for _, bad := range [][]byte{nil, {0, 0}, {0, 0, 0, 9, '{'}, {0xff, 0xff, 0xff, 0xff}, encodeChunk(chunkHeader{Size: 3}, []byte("four"))} {
		if _, err := parseChunk(bad); !errors.Is(err, wire.ErrUnavailable) {
			t.Errorf("frame %q: %v, want unavailable", bad, err)
		}
	}
}

// Whatever the other region answers, parseChunk never panics, and a
// chunk it accepts is no larger than the file it says it is part of.
func FuzzParseChunk(f *testing.F) {
	f.Add(encodeChunk(chunkHeader{Size: 10, SHA256: strings.Repeat("0", 64)}, []byte("0123456789")))
	f.Add(encodeChunk(chunkHeader{Error: "not_found"}, nil))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 16, 0})
	f.Fuzz(func(t *testing.T, frame []byte) {
		c, err := parseChunk(frame)
		if err != nil {
			if !errors.Is(err, wire.ErrNotFound) && !errors.Is(err, wire.ErrUnavailable) {
				t.Fatalf("error %v wraps neither not found nor unavailable", err)
			}
			return
		}
		if c.Size < 0 || int64(len(c.Data)) > c.Size || len(c.Data) > MaxMediaChunk {
			t.Fatalf("accepted %d bytes of %d", len(c.Data), c.Size)
		}
		if n := binary.BigEndian.Uint32(frame); !bytes.Equal(frame[4+n:], c.Data) {
			t.Fatal("data is not what follows the header")
		}
	})
}

// Whatever another region asks, parseMediaRequest never panics, and
// what it accepts names a media ID and a bounded, non-negative range.
func FuzzParseMediaRequest(f *testing.F) {
	f.Add(`{"id":"` + testMediaID + `","off":0,"len":262144}`)
	f.Add(`{"id":"` + testMediaID + `@ap","preview":true,"off":5,"len":1}`)
	f.Add(`{"id":"../x","off":0,"len":1}`)
	f.Add(`{"id":"` + testMediaID + `","off":-1,"len":1}{}`)
	f.Fuzz(func(t *testing.T, payload string) {
		req, err := parseMediaRequest([]byte(payload))
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatalf("error %v is not invalid", err)
			}
			return
		}
		if !validRemoteMediaID(req.ID) || strings.ContainsAny(req.ID, "/.") || req.Off < 0 || req.Len < 1 || req.Len > MaxMediaChunk {
			t.Fatalf("accepted %+v", req)
		}
	})
}

// Whatever metadata a forwarded media message carries, withMedia never
// panics and keeps only a media with a well-formed ID.
func FuzzWithMedia(f *testing.F) {
	f.Add(`{"type":"media","media":{"id":"` + testMediaID + `","mime":"image/jpeg","size":5,"width":3,"preview":true}}`)
	f.Add(`{"type":"media","media":{"id":"` + testMediaID + `@us"}}`)
	f.Add(`{"type":"media","media":null}`)
	f.Add(`{"type":"media","media":{"id":"x@"}}`)
	f.Fuzz(func(t *testing.T, payload string) {
		env := wire.Envelope{Type: wire.TypeMedia}
		if err := withMedia(&env, []byte(payload)); err != nil {
			return
		}
		if env.Media == nil || !validRemoteMediaID(env.Media.ID) {
			t.Fatalf("accepted %+v", env.Media)
		}
	})
}
