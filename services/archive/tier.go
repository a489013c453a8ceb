package archive

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/archive/segment"
)

// Tiering (issue 11). The oldest messages of a conversation are sealed
// into immutable segments (services/archive/segment) kept in a
// SegmentStore: the S3 bucket of the archive, or a directory under the
// node's data dir. Sealing is a replicated decision: the sealer (on the
// leader) builds a segment from the hot messages, puts it in the store
// and reads it back (a shared store), then proposes wire.CmdSegmentSealed;
// the FSM handler on every node checks that the hot range still holds
// exactly those messages (their count and a hash of their IDs and
// bodies), deletes them and keeps an index entry:
//
//	sg/{convKey}/{lastID} → segVersion(1) firstID(8) uvarint(count)
//	                        uvarint(size) sha256(32) objectKey
//
// Readers look a sealed message up by its conversation and ID in that
// index and read the block that holds it through a cache. With a store
// that is not shared (each node's own directory), the command carries the
// segment's bytes and every node writes its copy when it applies it.

// SegmentStore keeps sealed segments. Implementations are safe for
// concurrent use.
type SegmentStore interface {
	// Put stores data under key, replacing what is there.
	Put(ctx context.Context, key string, data []byte) error
	// Get streams [offset, offset+length) of key (length -1: to the end).
	// A missing key wraps ErrSegmentMissing.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Size is the size of key; a missing key wraps ErrSegmentMissing.
	Size(ctx context.Context, key string) (int64, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix until
	// fn returns false.
	List(ctx context.Context, prefix string, fn func(key string, size int64, modified time.Time) bool) error
	// Shared tells whether every node sees the same objects (S3), or
	// each node keeps its own (a local directory).
	Shared() bool
}

var (
	// ErrSegmentMissing is wrapped by a SegmentStore for a key it does
	// not hold, and by reads of a sealed message whose segment is gone.
	ErrSegmentMissing = errors.New("archive: segment object missing")
	// ErrSegmentCorrupt is wrapped when a segment fails its checks: it is
	// reported, never served.
	ErrSegmentCorrupt = errors.New("archive: segment corrupt")
	// ErrSegmentUnavailable is wrapped when a segment cannot be read now
	// (the object store is down, slow or refuses us): reads answer 503
	// and are tried again, unlike a missing or damaged segment.
	ErrSegmentUnavailable = errors.New("archive: the segment store cannot be reached now")
	// ErrSealStale is the FSM's answer to a seal whose range no longer
	// holds exactly the messages the segment was built from (or is
	// sealed already): nothing changes, and the object is an orphan.
	ErrSealStale = errors.New("archive: seal does not match the hot range")
	// ErrNoSegments is returned when sealed messages are asked for and
	// the service has no segment store.
	ErrNoSegments = errors.New("archive: no segment store")
)

// SegmentRef names a sealed segment: what the index entry holds.
type SegmentRef struct {
	Conv            string
	FirstID, LastID snowflake.ID
	Count           int
	Key             string // the object key in the SegmentStore
	Size            int64
	SHA256          [sha256.Size]byte
}

const segVersion = 1

func segIndexPrefix(conv string) []byte { return cat([]byte("sg/" + conv + "/")) }
func segIndexRoot() []byte              { return cat([]byte("sg/")) }

func segIndexKey(conv string, last snowflake.ID) []byte {
	return cat([]byte("sg/"+conv+"/"), be64(uint64(last)))
}

func (r SegmentRef) encodeIndex() []byte {
	b := make([]byte, 0, 1+8+2*binary.MaxVarintLen64+sha256.Size+len(r.Key))
	b = append(b, segVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(r.FirstID))
	b = binary.AppendUvarint(b, uint64(r.Count))
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = append(b, r.SHA256[:]...)
	return append(b, r.Key...)
}

// decodeSegIndex reads the index entry k → v.
func decodeSegIndex(k, v []byte) (SegmentRef, bool) {
	root := segIndexRoot()
	if len(k) < len(root)+2+8 || string(k[:len(root)]) != string(root) || k[len(k)-9] != '/' {
		return SegmentRef{}, false
	}
	r := SegmentRef{Conv: string(k[len(root) : len(k)-9]), LastID: snowflake.ID(tail8(k))}
	if len(v) < 1+8 || v[0] != segVersion {
		return SegmentRef{}, false
	}
	r.FirstID = snowflake.ID(binary.BigEndian.Uint64(v[1:]))
	rest := v[9:]
	n, k1 := binary.Uvarint(rest)
	if k1 <= 0 {
		return SegmentRef{}, false
	}
	size, k2 := binary.Uvarint(rest[k1:])
	if k2 <= 0 || len(rest) < k1+k2+sha256.Size+1 {
		return SegmentRef{}, false
	}
	r.Count, r.Size = int(n), int64(size)
	copy(r.SHA256[:], rest[k1+k2:])
	r.Key = string(rest[k1+k2+sha256.Size:])
	if r.FirstID == 0 || r.FirstID > r.LastID || r.Count <= 0 {
		return SegmentRef{}, false
	}
	return r, true
}

// SegmentRefOf tells whether a key and value of the FSM's state are a
// segment index entry, and which object it references (backups copy the
// segments a state references).
func SegmentRefOf(key, value []byte) (SegmentRef, bool) { return decodeSegIndex(key, value) }

// SegmentObjectKey is where the segment of conv over [first, last] is
// stored: d/{a}/{b}/{first}-{last}.seg for a direct conversation and
// g/{gid}/{first}-{last}.seg for a group. Object keys hold no '@', so a
// region-qualified peer or group ("bob@us") takes two elements, "bob/_us":
// a user ID never starts with '_' and a group ID is always the first
// element, so the key still names one conversation.
func SegmentObjectKey(conv string, first, last snowflake.ID) (string, error) {
	var dir string
	switch {
	case strings.HasPrefix(conv, "d:"):
		a, b, ok := strings.Cut(conv[2:], ":")
		if !ok || wire.ValidPeerID(a) != nil || wire.ValidPeerID(b) != nil {
			return "", fmt.Errorf("%w: conversation %q", ErrBadCommand, conv)
		}
		dir = "d/" + keyElems(a) + "/" + keyElems(b)
	case strings.HasPrefix(conv, "g:"):
		if wire.ValidGroupID(conv[2:]) != nil {
			return "", fmt.Errorf("%w: conversation %q", ErrBadCommand, conv)
		}
		dir = "g/" + keyElems(conv[2:])
	default:
		return "", fmt.Errorf("%w: conversation %q", ErrBadCommand, conv)
	}
	return dir + "/" + strconv.FormatUint(uint64(first), 10) + "-" + strconv.FormatUint(uint64(last), 10) + ".seg", nil
}

// keyElems is id as object key elements: "bob" or, qualified, "bob/_us".
func keyElems(id string) string {
	if name, region, ok := strings.Cut(id, "@"); ok {
		return name + "/_" + region
	}
	return id
}

// sealCmd is the payload of wire.CmdSegmentSealed.
type sealCmd struct {
	Ref     SegmentRef
	MsgHash [sha256.Size]byte // of the sealed messages (see hashMessages)
	Inline  []byte            // the segment's bytes, for stores that are not shared
}

func (c *sealCmd) encode() []byte {
	r := c.Ref
	b := make([]byte, 0, 64+len(r.Conv)+len(r.Key)+2*sha256.Size+len(c.Inline))
	b = append(b, segVersion)
	b = appendStr(b, r.Conv)
	b = binary.BigEndian.AppendUint64(b, uint64(r.FirstID))
	b = binary.BigEndian.AppendUint64(b, uint64(r.LastID))
	b = binary.AppendUvarint(b, uint64(r.Count))
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = append(b, r.SHA256[:]...)
	b = append(b, c.MsgHash[:]...)
	b = appendStr(b, r.Key)
	return append(b, c.Inline...)
}

func decodeSealCmd(b []byte) (sealCmd, error) {
	if len(b) < 1 || b[0] != segVersion {
		return sealCmd{}, fmt.Errorf("%w: unknown seal command version", ErrBadCommand)
	}
	rd := reader{b: b[1:]}
	var c sealCmd
	c.Ref.Conv = rd.str()
	c.Ref.FirstID = snowflake.ID(rd.u64())
	c.Ref.LastID = snowflake.ID(rd.u64())
	count, k := binary.Uvarint(rd.b)
	if k <= 0 {
		return sealCmd{}, fmt.Errorf("%w: seal", ErrBadCommand)
	}
	size, k2 := binary.Uvarint(rd.b[k:])
	if k2 <= 0 || len(rd.b) < k+k2+2*sha256.Size {
		return sealCmd{}, fmt.Errorf("%w: seal", ErrBadCommand)
	}
	c.Ref.Count, c.Ref.Size = int(count), int64(size)
	copy(c.Ref.SHA256[:], rd.b[k+k2:])
	copy(c.MsgHash[:], rd.b[k+k2+sha256.Size:])
	rd.b = rd.b[k+k2+2*sha256.Size:]
	c.Ref.Key = rd.str()
	c.Inline = rd.b
	want, err := SegmentObjectKey(c.Ref.Conv, c.Ref.FirstID, c.Ref.LastID)
	switch {
	case rd.err || err != nil:
		return sealCmd{}, fmt.Errorf("%w: seal", ErrBadCommand)
	case c.Ref.FirstID == 0 || c.Ref.FirstID > c.Ref.LastID || c.Ref.Count <= 0 || c.Ref.Count > maxSealCount:
		return sealCmd{}, fmt.Errorf("%w: seal range", ErrBadCommand)
	case c.Ref.Key != want:
		return sealCmd{}, fmt.Errorf("%w: seal object key %q, want %q", ErrBadCommand, c.Ref.Key, want)
	case len(c.Inline) > 0 && (int64(len(c.Inline)) != c.Ref.Size || sha256.Sum256(c.Inline) != c.Ref.SHA256):
		return sealCmd{}, fmt.Errorf("%w: seal: the inline segment does not match its size and checksum", ErrBadCommand)
	}
	return c, nil
}

// maxSealCount bounds the messages of one segment: the FSM deletes them
// all in the transaction that applies the seal.
const maxSealCount = 4096

// hashMessages is what the FSM compares a seal with: the SHA-256 of each
// message's ID, body length and body, in ID order.
func hashMessages(msgs []segment.Message) [sha256.Size]byte {
	h := sha256.New()
	var b [8 + binary.MaxVarintLen64]byte
	for _, m := range msgs {
		binary.BigEndian.PutUint64(b[:8], m.ID)
		n := binary.PutUvarint(b[8:], uint64(len(m.Body)))
		h.Write(b[:8+n])
		h.Write(m.Body)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// sealed is the FSM's result of a seal.
type sealed struct {
	Ref SegmentRef
}

// applySeal checks a seal against the hot range and, if it matches,
// writes the inline segment (a store that is not shared), deletes the
// sealed messages and keeps the index entry. Every check reads only
// replicated keys, so every node decides the same; nothing is written
// before they pass.
func applySeal(tx *badger.Txn, payload []byte, st *fsmState) (any, error) {
	c, err := decodeSealCmd(payload)
	if err != nil {
		return nil, err
	}
	r := c.Ref
	ik := segIndexKey(r.Conv, r.LastID)
	if _, err := tx.Get(ik); err == nil {
		return nil, fmt.Errorf("%w: %s is sealed already", ErrSealStale, r.Key)
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, err
	}
	// Segments of a conversation never overlap (readers find one by the
	// first index entry at or above an ID).
	if prev, err := lastIndexed(tx, segIndexPrefix(r.Conv)); err != nil {
		return nil, err
	} else if snowflake.ID(prev) >= r.FirstID {
		return nil, fmt.Errorf("%w: %s overlaps or precedes a sealed segment", ErrSealStale, r.Key)
	}
	msgs, err := sealRangeTx(tx, r.Conv, r.FirstID, r.LastID, maxSealCount+1)
	if err != nil {
		return nil, err
	}
	if len(msgs) != r.Count || hashMessages(msgs) != c.MsgHash {
		return nil, fmt.Errorf("%w: %s: %d hot messages in the range, the segment has %d", ErrSealStale, r.Key, len(msgs), r.Count)
	}
	// The conversation list reads a conversation's newest message from
	// its history key: never seal it.
	top, err := lastIndexed(tx, convPrefix(r.Conv))
	if err != nil {
		return nil, err
	}
	if snowflake.ID(top) <= r.LastID {
		return nil, fmt.Errorf("%w: %s would seal the conversation's newest message", ErrSealStale, r.Key)
	}
	// A direct conversation whose summary predates kept unread counts
	// counts them by walking its hot history: keep them first, while
	// every message is still hot (groups of that age count over what
	// stays hot; see docs/operations.md).
	if !isGroupConv(r.Conv) {
		if _, found, err := getPair(tx, r.Conv); err != nil {
			return nil, err
		} else if !found {
			a, b := directUsers(r.Conv)
			p, ok, _, err := keptPair(tx, a, b, r.Conv)
			if err != nil {
				return nil, err
			}
			if ok {
				st.sums.forget(r.Conv)
				if err := tx.Set(pairKey(r.Conv), p.encode()); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, m := range msgs {
		id := snowflake.ID(m.ID)
		if err := tx.Delete(convKey(r.Conv, id)); err != nil {
			return nil, err
		}
		// A body of the older layout (or a push pointer) under m/: a
		// pointer to the conversation finds it in the segment.
		if _, err := tx.Get(msgKey(id)); err == nil {
			if err := tx.Set(msgKey(id), append([]byte{pointerTag}, r.Conv...)); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
	}
	if err := tx.Set(ik, r.encodeIndex()); err != nil {
		return nil, err
	}
	if len(c.Inline) > 0 && st.segments != nil && !st.segments.Shared() {
		// Last, so that a transaction too big fails before the file is
		// written. A node that cannot write its copy stops rather than
		// drop messages it cannot serve (as for a failed commit).
		if err := putSegment(st.segments, r.Key, c.Inline); err != nil {
			panic(fmt.Sprintf("archive: writing segment %s: %v", r.Key, err))
		}
	}
	return &sealed{Ref: r}, nil
}

// putSegment writes a segment a node applies, retrying a few times.
func putSegment(st SegmentStore, key string, data []byte) error {
	var err error
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = st.Put(ctx, key, data)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
	}
	return err
}
