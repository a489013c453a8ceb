// Package backup takes and restores backups of an edgechat cluster: the
// replicated state (the FSM's Badger state at one applied index, the
// stream a follower installs) plus every sealed archive segment that
// state references, with a manifest that lists each file's size and
// SHA-256. A backup stands alone: restoring it needs nothing of the old
// cluster.
//
// A backup is taken from a running node (the admin endpoint GET
// /admin/backup streams one as a tar; `edgechat backup` writes it to a
// store) or by the Raft leader on a schedule (Scheduler). Stores are a
// local directory or an S3 bucket/prefix; every backup is a directory
// (key prefix) named by its ID, and the manifest is written last, so a
// backup without one is incomplete. Restore verifies every checksum
// before it writes anything, then builds the data directory of the first
// node of a new cluster.
package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Format and version of the manifest. A reader refuses other versions:
// a newer backup format may hold what an older binary cannot restore.
const (
	FormatName    = "edgechat-backup"
	FormatVersion = 1
	// ManifestName, StateName and SegmentDir are the names inside a backup.
	ManifestName = "manifest.json"
	StateName    = "state"
	SegmentDir   = "segments/"
	// maxManifestBytes bounds what ParseManifest reads (a manifest lists
	// every segment: ~150 bytes each, so ~100,000 segments).
	maxManifestBytes = 16 << 20
)

// Sentinel errors.
var (
	// ErrDamaged: a backup file is missing, truncated, or its size or
	// SHA-256 differs from the manifest's; or the manifest is unreadable.
	ErrDamaged = errors.New("backup: damaged backup")
	// ErrRenamed: a backup's directory (or prefix) has another name than
	// its manifest's ID, the name it was written under (a copy made
	// under another name): its files are read under the ID, and the
	// time in the ID orders the backups of a place.
	ErrRenamed = errors.New("backup: renamed backup")
	// ErrNotFound: no backup at the given place.
	ErrNotFound = errors.New("backup: no backup found")
	// ErrNotEmpty: restore refuses a data directory that has a node in it.
	ErrNotEmpty = errors.New("backup: data directory is not empty")
	// ErrArchiveInUse: restore refuses an archive store that holds
	// segments the backup does not (another cluster's).
	ErrArchiveInUse = errors.New("backup: the archive store holds segments this backup does not")
)

// Manifest describes one backup.
type Manifest struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// AppliedIndex is the Raft index the state was taken at: every entry
	// committed up to it is in the backup, none after it.
	AppliedIndex uint64 `json:"appliedIndex"`
	// Where it was taken: the node that streamed the state, the leader
	// then and the members (names), the edgechat version.
	Node     string   `json:"node,omitempty"`
	Leader   string   `json:"leader,omitempty"`
	Members  []string `json:"members,omitempty"`
	Software string   `json:"software,omitempty"`
	// Kind is KindStream for a backup streamed by GET /admin/backup
	// (`edgechat backup`); empty for a scheduled one. Scheduled backups'
	// prune counts and deletes only the latter.
	Kind string `json:"kind,omitempty"`
	// Region is the region name (--region) of the cluster that took the
	// backup: clusters of other regions given the same store (one
	// configuration for every region) neither count nor prune it as
	// theirs. Absent in backups of earlier versions (counted by all).
	Region string `json:"region,omitempty"`
	// Cluster is the ID of the cluster that took the backup (its
	// archive owner ID, r/arch/owner: random, kept in the replicated
	// state, so the same on every node and across leader changes): two
	// clusters of one region name given the same store neither count
	// nor prune each other's backups. Absent in backups of earlier
	// versions, and of a cluster below feature level 2 (counted as any
	// cluster's of their region).
	Cluster string `json:"cluster,omitempty"`
	// Files are the state (first) and the segments, in the order written.
	Files []File `json:"files"`
}

// KindStream marks the manifest of a backup taken through GET
// /admin/backup (by an operator, not the schedule).
const KindStream = "stream"

// File is one file of a backup.
type File struct {
	Name   string `json:"name"` // "state" or "segments/{archive object key}"
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// Bytes is the total size of the backup's files.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Segments is how many segment files the backup holds.
func (m *Manifest) Segments() int { return len(m.Files) - 1 }

// Marshal encodes the manifest (indented: operators read it).
func (m *Manifest) Marshal() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// ParseManifest decodes and checks a manifest: its format and version,
// an ID that names a directory, a positive applied index, the state file
// exactly once, segment names that stay inside the backup, no name
// twice, sizes >= 0 and SHA-256 digests in hex. Errors wrap ErrDamaged.
func ParseManifest(b []byte) (*Manifest, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrDamaged, fmt.Sprintf(format, a...))
	}
	if len(b) > maxManifestBytes {
		return nil, bad("larger than %d bytes", maxManifestBytes)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, bad("%v", err)
	}
	if dec.More() {
		return nil, bad("trailing data after the JSON object")
	}
	if m.Format != FormatName {
		return nil, bad("format %q, want %q", m.Format, FormatName)
	}
	if m.Version != FormatVersion {
		return nil, bad("version %d: this edgechat reads version %d", m.Version, FormatVersion)
	}
	if err := ValidID(m.ID); err != nil {
		return nil, bad("%v", err)
	}
	if m.AppliedIndex == 0 {
		return nil, bad("applied index 0")
	}
	if m.Created.IsZero() {
		return nil, bad("no creation time")
	}
	if len(m.Files) == 0 || m.Files[0].Name != StateName {
		return nil, bad("the first file must be %q", StateName)
	}
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if seen[f.Name] {
			return nil, bad("file %q listed twice", f.Name)
		}
		seen[f.Name] = true
		if i > 0 {
			key, ok := strings.CutPrefix(f.Name, SegmentDir)
			if !ok {
				return nil, bad("file %q: want %q or %s{key}", f.Name, StateName, SegmentDir)
			}
			if err := ValidKey(key); err != nil {
				return nil, bad("file %q: %v", f.Name, err)
			}
		}
		if f.Size < 0 {
			return nil, bad("file %q: size %d", f.Name, f.Size)
		}
		if !validHexDigest(f.SHA256) {
			return nil, bad("file %q: sha256 %q is not 64 lowercase hex digits", f.Name, f.SHA256)
		}
	}
	return &m, nil
}

// ValidID checks a backup ID: 1 to 100 bytes of [A-Za-z0-9._-], not
// starting with a dot (it names a directory or a key prefix).
func ValidID(id string) error {
	if id == "" || len(id) > 100 || id[0] == '.' {
		return fmt.Errorf("backup id %q: want 1 to 100 of [A-Za-z0-9._-], not starting with a dot", id)
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("backup id %q: want 1 to 100 of [A-Za-z0-9._-], not starting with a dot", id)
		}
	}
	return nil
}

// ValidKey checks an archive object key as a relative path that stays
// where it is put: no empty, "." or ".." element, no leading slash, no
// backslash or control byte, at most 1024 bytes.
func ValidKey(key string) error {
	if key == "" || len(key) > 1024 || strings.HasPrefix(key, "/") || path.Clean(key) != key {
		return fmt.Errorf("object key %q is not a clean relative path", key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "." || el == ".." || strings.HasSuffix(el, ".part") {
			return fmt.Errorf("object key %q: element %q not allowed", key, el)
		}
	}
	for _, c := range []byte(key) {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("object key %q: control byte or backslash", key)
		}
	}
	return nil
}

func validHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// newID names a backup: its creation time (UTC, sortable) and applied
// index, e.g. 20261203T233000.123Z-12345.
func newID(created time.Time, applied uint64) string {
	return fmt.Sprintf("%s-%d", created.UTC().Format("20060102T150405.000Z"), applied)
}
