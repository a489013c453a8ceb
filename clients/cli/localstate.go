package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The terminal client keeps where it was, the SDK's sync cursor, in its
// local state next to its sessions: the user's config directory,
// edgechat/state/USER@HOST[.DEVICE].json (the directory 0700, the file
// 0600). A start resumes from it (Options.Cursor): what came in while
// the client was not running is delivered and shown once, and the
// cursor is saved again, after a catch-up (Client.Sync), at the start,
// a few seconds after messages come in, and when the user quits, so
// that the next start does not show it again.

// DefaultStateDir is where the terminal client keeps its local state
// (sync cursors under state/, OIDC sessions under sessions/): the
// user's config directory, edgechat/.
func DefaultStateDir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cli: config directory: %w", err)
	}
	return filepath.Join(dir, "edgechat"), nil
}

// stateFile is the file of the user's state at server, for device.
func stateFile(dir, server, user, device string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: server URL %q", ErrConfig, server)
	}
	name := user + "@" + u.Host
	if device != "" {
		name += "." + device
	}
	name = strings.NewReplacer(":", "_", "/", "_", "\\", "_").Replace(name)
	return filepath.Join(dir, "state", name+".json"), nil
}

// localState is what the state file holds.
type localState struct {
	UserID string `json:"userId"`
	Server string `json:"server"`
	// Cursor is the sync cursor after the last catch-up whose messages
	// were all shown.
	Cursor string `json:"cursor"`
}

// cursorStore saves and loads the sync cursor of one user and server.
type cursorStore struct {
	path, user, server string
	mu                 sync.Mutex // one save at a time, so that a later save never writes an older cursor
}

// load returns the saved cursor, "" when there is none (or the file is
// another user's, or unreadable: the client then starts afresh).
func (s *cursorStore) load() (string, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cli: state file: %w", err)
	}
	var st localState
	if err := json.Unmarshal(b, &st); err != nil {
		return "", fmt.Errorf("cli: state file %s: %w", s.path, err)
	}
	if st.UserID != s.user {
		return "", nil
	}
	return st.Cursor, nil
}

// syncer is what save needs of the SDK client.
type syncer interface {
	Sync(ctx context.Context) error
	Cursor() string
}

// save catches up (Client.Sync: everything it finds has reached the
// screen when it returns) and writes the cursor, which then covers every
// message shown so far. A background sync of the SDK's (a reconnection)
// may move the cursor past messages still on their way to the screen
// between the catch-up and the read of the cursor: a second catch-up
// delivers them before the cursor is written, so that it never covers
// a message the screen has not had.
func (s *cursorStore) save(ctx context.Context, cl syncer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cl.Sync(ctx); err != nil {
		return err
	}
	cur := cl.Cursor()
	if cur == "" {
		return nil
	}
	if err := cl.Sync(ctx); err != nil {
		return err
	}
	b, _ := json.Marshal(localState{UserID: s.user, Server: s.server, Cursor: cur})
	if err := writePrivate(s.path, b); err != nil {
		return fmt.Errorf("cli: state file: %w", err)
	}
	return nil
}
