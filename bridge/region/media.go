package region

// Media across regions (issue 14). A media message crosses the link as
// any message does, carrying the metadata its region filled in (mime,
// kind, name, size, dimensions, duration, placeholder, preview flag);
// the receiving region records the media as {id}@{region} and fetches
// its bytes (services/media remote.go) over the node's query connection
// (profile.go): a QoS 1 publish on $link/{own}/media with the node's
// response topic,
//
//	{"id":"…","preview":false,"off":0,"len":262144}
//
// (id as the answering region names it: its own ID, or {id}@{region} for
// a copy it holds of a third region's media). The answer is a chunk frame:
// 4 bytes big-endian header length, the header as JSON
// ({"size":N,"sha256":"…","mime":"…","etag":"…"}, sha256 with the chunk
// at offset 0; or {"error":"not_found"|"unavailable"}), then the bytes.
//
// A region answers only for media it sent to that region: a user grant
// name@{asker} (a direct message to a user of the asker), a group grant
// gid@{asker} (a message to a group whose home is the asker), or a grant
// of one of its own groups with members in the asker. Anything else is
// answered not_found, as for an ID that does not exist, so that IDs
// cannot be probed.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// MediaSource is this region's media for the other regions (the media
// service): who a media was sent to, and chunks of its file.
type MediaSource interface {
	MediaGrants(id string) (users, groups []string, err error)
	MediaChunk(ctx context.Context, id string, preview bool, off int64, n int) (wire.MediaChunk, error)
}

// MediaTopic is where region's query connections ask for media chunks.
func MediaTopic(region string) string { return LinkPrefix + region + "/media" }

// MaxMediaChunk is the most bytes one chunk request may ask for.
const MaxMediaChunk = 256 << 10

// maxChunkHeader bounds a chunk frame's header.
const maxChunkHeader = 4 << 10

type mediaRequest struct {
	ID      string `json:"id"`
	Preview bool   `json:"preview,omitempty"`
	Off     int64  `json:"off"`
	Len     int    `json:"len"`
}

type chunkHeader struct {
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	MIME   string `json:"mime,omitempty"`
	ETag   string `json:"etag,omitempty"`
	Error  string `json:"error,omitempty"` // not_found, unavailable
}

// validRemoteMediaID accepts a media ID as a region names it: 24
// characters of lower-case base32, optionally @region.
func validRemoteMediaID(id string) bool {
	base, region, ok := strings.Cut(id, "@")
	if ok && address.ValidRegion(region) != nil || len(base) != 24 {
		return false
	}
	for i := 0; i < len(base); i++ {
		if c := base[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// parseMediaRequest reads a chunk request of another region.
func parseMediaRequest(payload []byte) (mediaRequest, error) {
	var req mediaRequest
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		return mediaRequest{}, fmt.Errorf("region: malformed media request: %v: %w", err, wire.ErrInvalid)
	}
	if !validRemoteMediaID(req.ID) || req.Off < 0 || req.Len < 1 || req.Len > MaxMediaChunk {
		return mediaRequest{}, fmt.Errorf("region: media request %q at %d for %d bytes: %w", req.ID, req.Off, req.Len, wire.ErrInvalid)
	}
	return req, nil
}

// encodeChunk writes a chunk frame.
func encodeChunk(h chunkHeader, data []byte) []byte {
	hj := mustJSON(h)
	out := make([]byte, 4, 4+len(hj)+len(data))
	binary.BigEndian.PutUint32(out, uint32(len(hj)))
	return append(append(out, hj...), data...)
}

// parseChunk reads a chunk frame: the chunk, or the answering region's
// refusal (wire.ErrNotFound) or trouble (wire.ErrUnavailable).
func parseChunk(frame []byte) (wire.MediaChunk, error) {
	if len(frame) < 4 {
		return wire.MediaChunk{}, fmt.Errorf("region: media chunk of %d bytes: %w", len(frame), wire.ErrUnavailable)
	}
	n := binary.BigEndian.Uint32(frame)
	if n > maxChunkHeader || uint64(n) > uint64(len(frame)-4) {
		return wire.MediaChunk{}, fmt.Errorf("region: media chunk header of %d bytes: %w", n, wire.ErrUnavailable)
	}
	var h chunkHeader
	if err := json.Unmarshal(frame[4:4+n], &h); err != nil {
		return wire.MediaChunk{}, fmt.Errorf("region: media chunk header: %v: %w", err, wire.ErrUnavailable)
	}
	data := frame[4+n:]
	switch {
	case h.Error == "not_found":
		return wire.MediaChunk{}, fmt.Errorf("region: media: %w", wire.ErrNotFound)
	case h.Error != "":
		return wire.MediaChunk{}, fmt.Errorf("region: media: the other region: %q: %w", h.Error, wire.ErrUnavailable)
	case h.Size < 0 || int64(len(data)) > h.Size || len(data) > MaxMediaChunk:
		return wire.MediaChunk{}, fmt.Errorf("region: media chunk of %d bytes of %d: %w", len(data), h.Size, wire.ErrUnavailable)
	}
	return wire.MediaChunk{Size: h.Size, SHA256: h.SHA256, MIME: h.MIME, ETag: h.ETag, Data: data}, nil
}

// FetchMediaChunk reads n bytes at off of the file (or preview) of
// media id of region over this node's query connection (services/media
// Remote). Errors wrap wire.ErrNotFound (region refused: not sent to us,
// or no such media) or wire.ErrUnavailable (the link is down, no answer).
func (b *Bridge) FetchMediaChunk(ctx context.Context, region, id string, preview bool, off int64, n int) (wire.MediaChunk, error) {
	if !b.Linked(region) {
		return wire.MediaChunk{}, fmt.Errorf("region: media of %s: %w", region, wire.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	req := mustJSON(mediaRequest{ID: id, Preview: preview, Off: off, Len: min(n, MaxMediaChunk)})
	raw, err := b.request(ctx, region, MediaTopic(b.cfg.Region), req)
	if err != nil {
		b.m.received.WithLabelValues(region, "media_unanswered").Inc()
		return wire.MediaChunk{}, fmt.Errorf("region: media %s of %s: %v: %w", id, region, err, wire.ErrUnavailable)
	}
	c, err := parseChunk(raw)
	if err == nil && off == 0 && c.SHA256 == "" && c.Size > 0 {
		err = fmt.Errorf("region: media %s of %s: no checksum: %w", id, region, wire.ErrUnavailable)
	}
	return c, err
}

// answerMedia answers region's chunk request, if the media was sent to
// region.
func (b *Bridge) answerMedia(ctx context.Context, region string, payload []byte) ([]byte, error) {
	req, err := parseMediaRequest(payload)
	if err != nil {
		b.count(region, "invalid")
		return nil, err
	}
	if b.deps.Media == nil {
		return encodeChunk(chunkHeader{Error: "not_found"}, nil), nil
	}
	users, groups, err := b.deps.Media.MediaGrants(req.ID)
	if err == nil && !b.mediaSentTo(region, users, groups) {
		b.count(region, "media_refused")
		b.log.Warn("region link: media request refused: not sent to that region", "link", region, "media", req.ID)
		err = wire.ErrNotFound
	}
	var c wire.MediaChunk
	if err == nil {
		c, err = b.deps.Media.MediaChunk(ctx, req.ID, req.Preview, req.Off, req.Len)
	}
	switch {
	case err == nil:
		b.count(region, "media_chunk")
		return encodeChunk(chunkHeader{Size: c.Size, SHA256: c.SHA256, MIME: c.MIME, ETag: c.ETag}, c.Data), nil
	case errors.Is(err, wire.ErrUnavailable):
		return encodeChunk(chunkHeader{Error: "unavailable"}, nil), nil
	}
	return encodeChunk(chunkHeader{Error: "not_found"}, nil), nil
}

// mediaSentTo tells whether grants show a media sent to region: to a
// user of region, to a group whose home is region, or to a group of ours
// that has members in region.
func (b *Bridge) mediaSentTo(region string, users, groups []string) bool {
	for _, u := range users {
		if address.RegionOf(u) == region {
			return true
		}
	}
	found := false
	_ = b.deps.DB.View(func(tx *badger.Txn) error {
		for _, g := range groups {
			home := address.RegionOf(g)
			if home == region {
				found = true
				return nil
			}
			if home != "" {
				continue
			}
			if regions, err := groupRegions(tx, g); err == nil && slices.Contains(regions, region) {
				found = true
				return nil
			}
		}
		return nil
	})
	return found
}

// withMedia puts back the media metadata of a forwarded media message
// that wire.ParseEnvelope keeps only the ID of (a client's message
// names its upload; a region's carries what its server filled in). The
// media service checks the values (services/media AttachRemote).
func withMedia(env *wire.Envelope, payload []byte) error {
	if env.Type != wire.TypeMedia {
		return nil
	}
	var m struct {
		Media *wire.Media `json:"media"`
	}
	if err := json.Unmarshal(payload, &m); err != nil || m.Media == nil || !validRemoteMediaID(m.Media.ID) {
		return fmt.Errorf("media metadata: %v", err)
	}
	env.Media = m.Media
	return nil
}
