package backup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An intact backup copied or moved under another name (`cp -r
// backups/20261207T231802.357Z-40 /mnt/offsite/latest`, as tried by hand)
// is refused as renamed, with the name to give it back, not as damaged:
// restore said "damaged backup: backup latest: its manifest names backup
// ...", and the operator had every reason to believe the copy broken.
// Nothing is written either way.
func TestARenamedBackupIsRefusedAsRenamedNotDamaged(t *testing.T) {
	_, _, src := fixture(t)
	st, m := backupToDir(t, src)
	if err := os.Rename(filepath.Join(st.root, m.ID), filepath.Join(st.root, "latest")); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	_, err := Restore(tctx(t), st, "latest", restoreOpts(data))
	if errors.Is(err, ErrDamaged) || !errors.Is(err, ErrRenamed) || !strings.Contains(err.Error(), "rename it back to "+m.ID) {
		t.Fatalf("restore of a renamed backup: %v; want ErrRenamed (not ErrDamaged) naming %s", err, m.ID)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Fatalf("restore of a renamed backup wrote %v", ents)
	}
	if _, err := Latest(tctx(t), st); !errors.Is(err, ErrRenamed) {
		t.Fatalf("Latest with a renamed backup: %v; want ErrRenamed", err)
	}
}
