package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type fakeSyncer struct {
	syncs   int
	cursors []string // Cursor() after each Sync
	err     error
}

func (f *fakeSyncer) Sync(context.Context) error {
	if f.err != nil {
		return f.err
	}
	f.syncs++
	return nil
}

func (f *fakeSyncer) Cursor() string { return f.cursors[min(f.syncs, len(f.cursors))-1] }

// The state file is per user, server and device, 0600 in a 0700
// directory; a save writes the cursor read after a catch-up, and syncs
// again before writing it (what a background sync moved the cursor past
// reaches the screen first); a failed catch-up writes nothing; another
// user's file is not used.
func TestCursorStore(t *testing.T) {
	dir := t.TempDir()
	path, err := stateFile(dir, "http://127.0.0.1:8080", "bob", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state", "bob@127.0.0.1_8080.laptop.json"); path != want {
		t.Fatalf("state file %s, want %s", path, want)
	}
	st := &cursorStore{path: path, user: "bob", server: "http://127.0.0.1:8080"}
	if cur, err := st.load(); cur != "" || err != nil {
		t.Fatalf("nothing saved: %q %v", cur, err)
	}
	if err := st.save(context.Background(), &fakeSyncer{err: errors.New("offline")}); err == nil {
		t.Fatal("a failed catch-up saved")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a failed catch-up wrote the file: %v", err)
	}
	fs := &fakeSyncer{cursors: []string{"c1", "c2"}}
	if err := st.save(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	if fs.syncs != 2 {
		t.Fatalf("%d catch-ups, want 2", fs.syncs)
	}
	if cur, err := st.load(); cur != "c1" || err != nil {
		t.Fatalf("loaded %q %v, want the cursor read after the first catch-up", cur, err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	other := &cursorStore{path: path, user: "alice"}
	if cur, err := other.load(); cur != "" || err != nil {
		t.Fatalf("alice got bob's cursor: %q %v", cur, err)
	}
}
