package media

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Statuses of an upload.
const (
	StatusUploading  = "uploading"  // created, bytes not all there yet
	StatusProcessing = "processing" // uploaded, queued or being processed
	StatusReady      = "ready"      // processed: may be sent and served
	StatusRejected   = "rejected"   // refused by processing (Reason)
)

// Where processed media lives.
const (
	TierProcessed = "processed"
	TierCold      = "cold"
)

const (
	prefixRecord     = "r/media/m/"
	prefixJob        = "r/media/j/"
	prefixQuota      = "r/media/q/"
	prefixGrantUser  = "r/media/gu/"
	prefixGrantGroup = "r/media/gg/"
	// prefixUploadKey: + owner/key → uploadKeyRecord, the Idempotency-Key
	// an upload was made with (erased with the owner's account).
	prefixUploadKey = "r/media/k/"
)

func recordKey(id string) []byte          { return []byte(prefixRecord + id) }
func jobKey(id string) []byte             { return []byte(prefixJob + id) }
func quotaKey(uid, day string) []byte     { return []byte(prefixQuota + uid + "/" + day) }
func grantUserKey(id, uid string) []byte  { return []byte(prefixGrantUser + id + "/" + uid) }
func grantGroupPrefix(id string) []byte   { return []byte(prefixGrantGroup + id + "/") }
func grantGroupKey(id, gid string) []byte { return []byte(prefixGrantGroup + id + "/" + gid) }

// Record is an upload and what became of it.
type Record struct {
	ID          string `json:"id"`
	Owner       string `json:"owner"`
	Name        string `json:"name,omitempty"`
	ClaimedType string `json:"claimedType,omitempty"`
	Size        int64  `json:"size"` // bytes uploaded (declared until uploaded)
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"` // why it was rejected
	// Node holds the files when the store is local to each node.
	Node string `json:"node"`

	Kind        string   `json:"kind,omitempty"`
	MIME        string   `json:"mime,omitempty"`
	Ext         string   `json:"ext,omitempty"`
	Width       int      `json:"width,omitempty"`
	Height      int      `json:"height,omitempty"`
	DurationMs  int64    `json:"durationMs,omitempty"`
	Camera      string   `json:"camera,omitempty"`
	TakenAt     string   `json:"takenAt,omitempty"`
	Placeholder string   `json:"placeholder,omitempty"`
	Notes       []string `json:"notes,omitempty"`
	// OutputSize and ETag are of the processed file; PreviewMIME is set
	// when there is a preview.
	OutputSize  int64  `json:"outputSize,omitempty"`
	ETag        string `json:"etag,omitempty"`
	PreviewMIME string `json:"previewMime,omitempty"`
	Tier        string `json:"tier,omitempty"`
	Sent        bool   `json:"sent,omitempty"`
	// Direct: uploaded through presigned URLs (UploadID: multipart).
	Direct   bool   `json:"direct,omitempty"`
	UploadID string `json:"uploadId,omitempty"`
	// Key: the Idempotency-Key it was made with (its uploadKeyRecord goes
	// with it).
	Key string `json:"key,omitempty"`
	// Erased: its uploader's account was erased (erase.go); nobody may
	// read it and the sweeper deletes its files, then the record.
	Erased bool `json:"erased,omitempty"`
	// Source is set on a media of another region (remote.go): the region
	// its bytes are read from and its ID there; Fetched once they are in
	// this region's store (on Node), SHA256 their checksum then.
	Source   string `json:"source,omitempty"`
	SourceID string `json:"sourceId,omitempty"`
	Fetched  bool   `json:"fetched,omitempty"`
	SHA256   string `json:"sha256,omitempty"`

	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	LastReadAt *time.Time `json:"lastReadAt,omitempty"`
	Job        *Claim     `json:"job,omitempty"`
}

// Claim is a worker's hold on a job.
type Claim struct {
	Node       string    `json:"node"`
	Attempt    int       `json:"attempt"`
	LeaseUntil time.Time `json:"leaseUntil"`
}

// Quota is a user's uploads on one day.
type Quota struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
}

// newID is a media ID: 24 characters of lower-case base32 (120 random
// bits), unguessable, so an ID alone grants nothing but is no secret
// either (downloads check access).
// keyedID is the ID of the upload owner makes with the Idempotency-Key
// key: every retry of the request proposes the same ID, so a node of an
// earlier version (which ignores the key) refuses a retry's record as
// existing instead of making a second upload.
func keyedID(owner, key string) string {
	sum := sha256.Sum256([]byte("edgechat media\x00" + owner + "\x00" + key))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:15]))
}

func uploadKeyKey(owner, key string) []byte { return []byte(prefixUploadKey + owner + "/" + key) }

// uploadKeyRecord is what an Idempotency-Key of an upload made: the
// upload, and the fingerprint of the request that made it.
type uploadKeyRecord struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
}

func newID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// ValidID reports whether id looks like a media ID.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Commands (JSON payloads).
type createCmd struct {
	ID          string    `json:"id"`
	Owner       string    `json:"owner"`
	Name        string    `json:"name,omitempty"`
	ClaimedType string    `json:"claimedType,omitempty"`
	Size        int64     `json:"size"`
	Node        string    `json:"node"`
	At          time.Time `json:"at"`
	// The proposer's limits, so that every node applies the same ones.
	QuotaCount int    `json:"quotaCount"`
	QuotaBytes int64  `json:"quotaBytes"`
	Direct     bool   `json:"direct,omitempty"`
	UploadID   string `json:"uploadId,omitempty"`
	// Key, optional: the request's Idempotency-Key (then ID is
	// keyedID(Owner, Key)), and Hash the request's fingerprint. A
	// command whose key made an upload that still exists writes nothing:
	// its value is that upload (recordResult.Replay), or ErrKeyReused
	// when Hash differs. Nodes of earlier versions ignore both fields.
	Key  string `json:"key,omitempty"`
	Hash string `json:"hash,omitempty"`
}

type uploadedCmd struct {
	ID   string    `json:"id"`
	Size int64     `json:"size"`
	At   time.Time `json:"at"`
	// Settle: the quota keeps the stored size only, and gives back what
	// the reserve counted above it (a multipart body's length, the
	// largest upload for one sent chunked; a direct upload's declared
	// size). Commands of earlier versions leave it false, and are
	// applied as they were.
	Settle bool `json:"settle,omitempty"`
}

type claimCmd struct {
	ID      string        `json:"id"`
	Node    string        `json:"node"`
	Renew   int           `json:"renew,omitempty"` // the attempt being renewed; 0 claims anew
	At      time.Time     `json:"at"`
	Lease   time.Duration `json:"lease"`
	Release bool          `json:"release,omitempty"` // give the claim up (a failure to retry elsewhere)
}

type doneCmd struct {
	ID      string    `json:"id"`
	Node    string    `json:"node"`
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Reason  string    `json:"reason,omitempty"` // set: rejected
	Result  *Record   `json:"result,omitempty"` // the processing fields of the record
}

// grantCmd lets users or groups read a media. Sent is the ID of the
// message that sent it (0 in commands written before it was kept): each
// grant's value is the highest Sent it was granted with, 8 bytes
// big-endian (empty when none was given: retention then counts it as
// sent when the record was created; see expire.go).
type grantCmd struct {
	ID     string       `json:"id"`
	Users  []string     `json:"users,omitempty"`
	Groups []string     `json:"groups,omitempty"`
	Sent   snowflake.ID `json:"sent,omitempty"`
}

type touchCmd struct {
	ID         string     `json:"id"`
	LastReadAt *time.Time `json:"lastReadAt,omitempty"`
	Tier       string     `json:"tier,omitempty"`
}

type deleteCmd struct {
	IDs []string `json:"ids"`
	// Failed: uploads whose bytes were not stored (refused or broken off
	// while they streamed): a record still uploading gives the quota
	// back what its creation counted, one upload and its reserve (the
	// quota counts what was stored). Commands of earlier versions leave
	// it false, and are applied as they were.
	Failed bool `json:"failed,omitempty"`
}

// dropUnsentCmd is the payload of wire.CmdMediaDropUnsent.
type dropUnsentCmd struct {
	IDs []string `json:"ids"`
}

func (s *Service) register(r Registrar) {
	r.Register(wire.CmdMediaCreate, s.applyCreate)
	r.Register(wire.CmdMediaUploaded, s.applyUploaded)
	r.Register(wire.CmdMediaClaim, s.applyClaim)
	r.Register(wire.CmdMediaDone, s.applyDone)
	r.Register(wire.CmdMediaGrant, s.applyGrant)
	r.Register(wire.CmdMediaTouch, s.applyTouch)
	r.Register(wire.CmdMediaDelete, s.applyDelete)
	r.Register(wire.CmdMediaDropUnsent, s.applyDropUnsent)
	r.Register(wire.CmdMediaExpire, s.applyExpire)
	r.Register(wire.CmdMediaRemote, s.applyRemote)
	r.Register(wire.CmdMediaFetched, s.applyFetched)
	r.Register(wire.CmdMediaIndex, s.applyIndex)
}

func (s *Service) propose(ctx context.Context, t byte, cmd any) (any, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("media: encode command: %w", err)
	}
	return s.prop.Propose(ctx, t, b)
}

func decode(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %v", errBadCommand, err)
	}
	return nil
}

func getRecord(tx *badger.Txn, id string) (Record, error) {
	var r Record
	ok, err := fsm.GetJSON(tx, recordKey(id), &r)
	if err != nil {
		return Record{}, err
	}
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// afterCommit runs fn once the entry's transaction is committed.
type afterCommit func()

func (a afterCommit) AfterCommit() { a() }

// recordResult is a handler's result: the record, and what to do once
// it is committed.
type recordResult struct {
	Record Record
	// Replay: a create whose Idempotency-Key made Record before.
	Replay bool
	after  func()
}

func (r *recordResult) AfterCommit() {
	if r.after != nil {
		r.after()
	}
}

func quotaDay(t time.Time) string { return t.UTC().Format("20060102") }

func (s *Service) applyCreate(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c createCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if !ValidID(c.ID) || wire.ValidUserID(c.Owner) != nil || c.Size < 0 || c.Node == "" {
		return nil, fmt.Errorf("%w: create %q by %q", errBadCommand, c.ID, c.Owner)
	}
	if c.Key != "" {
		// The key first: a retry is answered whatever changed since (the
		// quota), as it changes nothing.
		if len(c.Key) > 64 || c.ID != keyedID(c.Owner, c.Key) {
			return nil, fmt.Errorf("%w: bad idempotency key or id", errBadCommand)
		}
		var kr uploadKeyRecord
		found, err := fsm.GetJSON(tx, uploadKeyKey(c.Owner, c.Key), &kr)
		if err != nil {
			return nil, err
		}
		if found && kr.Hash != c.Hash {
			return nil, ErrKeyReused
		}
		// The upload the key made (also by a node of an earlier version,
		// which kept no key record): a retry. Gone (the first attempt's
		// bytes never arrived, so it was removed): made again below.
		if r, err := getRecord(tx, c.ID); err == nil && r.Owner == c.Owner {
			return &recordResult{Record: r, Replay: true}, nil
		} else if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if _, err := getRecord(tx, c.ID); err == nil {
		return nil, fmt.Errorf("%w: media %s exists", ErrBadState, c.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var q Quota
	qk := quotaKey(c.Owner, quotaDay(c.At))
	if _, err := fsm.GetJSON(tx, qk, &q); err != nil {
		return nil, err
	}
	if q.Count+1 > c.QuotaCount || q.Bytes+c.Size > c.QuotaBytes {
		return nil, fmt.Errorf("%w (%d uploads, %d bytes today)", ErrQuota, q.Count, q.Bytes)
	}
	q.Count++
	q.Bytes += c.Size
	r := Record{ID: c.ID, Owner: c.Owner, Name: c.Name, ClaimedType: c.ClaimedType, Size: c.Size,
		Status: StatusUploading, Node: c.Node, CreatedAt: c.At, UpdatedAt: c.At, Direct: c.Direct, UploadID: c.UploadID, Key: c.Key}
	if err := fsm.SetJSON(tx, qk, q); err != nil {
		return nil, err
	}
	if err := fsm.SetJSON(tx, recordKey(c.ID), r); err != nil {
		return nil, err
	}
	if err := indexOwner(tx, c.Owner, c.ID); err != nil {
		return nil, err
	}
	if c.Key != "" {
		if err := fsm.SetJSON(tx, uploadKeyKey(c.Owner, c.Key), uploadKeyRecord{ID: c.ID, Hash: c.Hash}); err != nil {
			return nil, err
		}
	}
	return &recordResult{Record: r}, nil
}

func (s *Service) applyUploaded(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c uploadedCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if r.Status != StatusUploading {
		return &recordResult{Record: r}, nil // a repeated notification: nothing to do
	}
	if c.Settle && r.Size > c.Size {
		if err := giveQuotaBack(tx, r, 0, r.Size-c.Size); err != nil {
			return nil, err
		}
	}
	r.Status, r.Size, r.UpdatedAt = StatusProcessing, c.Size, c.At
	if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
		return nil, err
	}
	if err := tx.Set(jobKey(r.ID), nil); err != nil {
		return nil, err
	}
	return &recordResult{Record: r, after: s.pokeJobs}, nil
}

// applyClaim gives the job to a worker when nobody holds it or the
// holder's lease ended at the command's time, or renews the holder's own
// claim; the result is the claim (Attempt counts the claims).
func (s *Service) applyClaim(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c claimCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if c.Node == "" || c.Lease <= 0 {
		return nil, fmt.Errorf("%w: claim without node or lease", errBadCommand)
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if r.Status != StatusProcessing {
		return nil, fmt.Errorf("%w: %s is %s", ErrBadState, r.ID, r.Status)
	}
	held := r.Job != nil && c.At.Before(r.Job.LeaseUntil)
	switch {
	case c.Release:
		if r.Job == nil || r.Job.Node != c.Node || r.Job.Attempt != c.Renew {
			return nil, ErrClaimLost
		}
		r.Job.LeaseUntil = c.At // expired: anyone may claim it now
		if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
			return nil, err
		}
		return &recordResult{Record: r, after: s.pokeJobs}, nil
	case c.Renew != 0:
		if r.Job == nil || r.Job.Node != c.Node || r.Job.Attempt != c.Renew {
			return nil, ErrClaimLost
		}
	case held:
		return nil, fmt.Errorf("%w: held by %s until %s", ErrClaimLost, r.Job.Node, r.Job.LeaseUntil.Format(time.RFC3339))
	default:
		attempt := 1
		if r.Job != nil {
			attempt = r.Job.Attempt + 1
		}
		r.Job = &Claim{Node: c.Node, Attempt: attempt}
	}
	r.Job.LeaseUntil = c.At.Add(c.Lease)
	if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
		return nil, err
	}
	return &recordResult{Record: r}, nil
}

// applyDone ends a job with its result, only for the claim in force: a
// worker that lost its claim (its lease ended and another took over)
// cannot finish the job a second time.
func (s *Service) applyDone(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c doneCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if r.Status != StatusProcessing || r.Job == nil || r.Job.Node != c.Node || r.Job.Attempt != c.Attempt {
		return nil, fmt.Errorf("%w: %s", ErrClaimLost, r.ID)
	}
	if c.Reason != "" {
		r.Status, r.Reason = StatusRejected, c.Reason
	} else {
		if c.Result == nil {
			return nil, fmt.Errorf("%w: done without a result", errBadCommand)
		}
		res := c.Result
		r.Status, r.Tier = StatusReady, TierProcessed
		r.Kind, r.MIME, r.Ext, r.Width, r.Height = res.Kind, res.MIME, res.Ext, res.Width, res.Height
		r.DurationMs, r.Camera, r.TakenAt, r.Placeholder, r.Notes = res.DurationMs, res.Camera, res.TakenAt, res.Placeholder, res.Notes
		r.OutputSize, r.ETag, r.PreviewMIME = res.OutputSize, res.ETag, res.PreviewMIME
		r.Node = c.Node // the processed files are where they were written
	}
	r.UpdatedAt, r.Job = c.At, nil
	if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
		return nil, err
	}
	if err := tx.Delete(jobKey(r.ID)); err != nil {
		return nil, err
	}
	return &recordResult{Record: r}, nil
}

func (s *Service) applyGrant(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c grantCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	for _, u := range c.Users {
		if wire.ValidPeerID(u) != nil { // bob@us: a media sent to another region (remote.go)
			return nil, fmt.Errorf("%w: grant to %q", errBadCommand, u)
		}
	}
	for _, g := range c.Groups {
		if wire.ValidGroupID(g) != nil {
			return nil, fmt.Errorf("%w: grant to group %q", errBadCommand, g)
		}
	}
	for _, k := range c.keys() {
		if err := setGrant(tx, k, c.Sent); err != nil {
			return nil, err
		}
	}
	if !r.Sent {
		r.Sent = true
		if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
			return nil, err
		}
	}
	return &recordResult{Record: r}, nil
}

// setGrant writes a grant sent in message sent, keeping the highest
// message ID it was sent in (commands may commit out of ID order).
func setGrant(tx *badger.Txn, k []byte, sent snowflake.ID) error {
	var had []byte
	if it, err := tx.Get(k); err == nil {
		if had, err = it.ValueCopy(nil); err != nil {
			return err
		}
		if sentOf(had) >= sent {
			return nil
		}
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	var v []byte
	if sent != 0 {
		v = binary.BigEndian.AppendUint64(nil, uint64(sent))
	}
	if err := tx.Set(k, v); err != nil {
		return err
	}
	return indexGrant(tx, k)
}

func (s *Service) applyTouch(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c touchCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if c.Tier != "" && c.Tier != TierProcessed && c.Tier != TierCold {
		return nil, fmt.Errorf("%w: tier %q", errBadCommand, c.Tier)
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if c.LastReadAt != nil && (r.LastReadAt == nil || c.LastReadAt.After(*r.LastReadAt)) {
		r.LastReadAt = c.LastReadAt
	}
	if c.Tier != "" {
		r.Tier = c.Tier
	}
	if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
		return nil, err
	}
	return &recordResult{Record: r}, nil
}

func (s *Service) applyDelete(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c deleteCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	for _, id := range c.IDs {
		if !validMediaID(id) {
			return nil, fmt.Errorf("%w: id %q", errBadCommand, id)
		}
	}
	for _, id := range c.IDs {
		if c.Failed {
			r, err := getRecord(tx, id)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			if err == nil && r.Status == StatusUploading {
				if err := giveQuotaBack(tx, r, 1, r.Size); err != nil {
					return nil, err
				}
			}
		}
		if err := deleteRecord(tx, id); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// giveQuotaBack takes uploads and bytes off what the quota of r's owner
// counted on the day r was created (never below nothing).
func giveQuotaBack(tx *badger.Txn, r Record, uploads int, bytes int64) error {
	var q Quota
	qk := quotaKey(r.Owner, quotaDay(r.CreatedAt))
	found, err := fsm.GetJSON(tx, qk, &q)
	if err != nil || !found {
		return err
	}
	q.Count = max(q.Count-uploads, 0)
	q.Bytes = max(q.Bytes-bytes, 0)
	return fsm.SetJSON(tx, qk, q)
}

// deleteRecord deletes media id's record with what hangs on it: its
// owner's index entry, its Idempotency-Key, its job, its grants, and the
// tombstone its files were deleted under.
func deleteRecord(tx *badger.Txn, id string) error {
	// Its owner's index entry (index.go); a record this version cannot
	// read has none. Its Idempotency-Key goes with it.
	var r Record
	if found, err := fsm.GetJSON(tx, recordKey(id), &r); err == nil && found && r.Owner != "" && !strings.Contains(r.Owner, "/") {
		if err := tx.Delete(ownerIndexKey(r.Owner, id)); err != nil {
			return err
		}
		if r.Key != "" {
			if err := tx.Delete(uploadKeyKey(r.Owner, r.Key)); err != nil {
				return err
			}
		}
	}
	for _, k := range [][]byte{recordKey(id), jobKey(id), pendingKey(id), tombstoneKey(id)} {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	if err := deleteGrantsOf(tx, id); err != nil {
		return err
	}
	return fsm.DeletePrefix(tx, grantGroupPrefix(id))
}

// applyDropUnsent deletes the records of uploads that are still ready
// and unsent, and leaves for each a tombstone naming the tier its files
// are in, which the sweeper deletes them from (then CmdMediaDelete takes
// the tombstone). An upload sent since the sweeper read it keeps its
// record and files: the grant of its message committed first. Nodes of
// earlier versions skip this command and keep the records until the
// tombstone's CmdMediaDelete removes them there too.
func (s *Service) applyDropUnsent(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c dropUnsentCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	for _, id := range c.IDs {
		if !validMediaID(id) {
			return nil, fmt.Errorf("%w: id %q", errBadCommand, id)
		}
	}
	var dropped []string
	for _, id := range c.IDs {
		var r Record
		found, err := fsm.GetJSON(tx, recordKey(id), &r)
		if err != nil {
			return nil, err
		}
		if !found || r.Status != StatusReady || r.Sent || r.Erased {
			continue
		}
		if err := deleteRecord(tx, id); err != nil {
			return nil, err
		}
		if err := fsm.SetJSON(tx, tombstoneKey(id), tombstone{Tier: string(tierOf(r))}); err != nil {
			return nil, err
		}
		dropped = append(dropped, id)
	}
	return dropped, nil
}

// prefixTombstone: + media ID → tombstone: a record dropped before its
// files (applyDropUnsent); the sweeper deletes them, then the tombstone.
const prefixTombstone = "r/media/x/"

func tombstoneKey(id string) []byte { return []byte(prefixTombstone + id) }

// tombstone names the store tier a dropped record's files are in.
type tombstone struct {
	Tier string `json:"tier"`
}

// Get reads a record.
func (s *Service) Get(id string) (Record, error) {
	if !validMediaID(id) {
		return Record{}, ErrNotFound
	}
	var r Record
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		r, err = getRecord(tx, id)
		return err
	})
	return r, err
}

// resultOf reads the record a handler returned through the proposer,
// or the stored one when the value did not survive a forwarded
// proposal.
func (s *Service) resultOf(v any, id string) (Record, error) {
	if r, ok := v.(*recordResult); ok {
		return r.Record, nil
	}
	return s.Get(id)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
