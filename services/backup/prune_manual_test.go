package backup

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A backup an operator took with `edgechat backup` (GET /admin/backup)
// into the store of the scheduled ones, say before an upgrade, is not a
// scheduled backup: --backup-keep counts and deletes only those
// (operations.md: "scheduled backups kept; older ones ... are deleted").
// Before, Prune counted every complete backup, so the manual one was
// deleted as soon as --backup-keep scheduled ones came after it.
func TestPruneKeepsABackupTakenByHand(t *testing.T) {
	_, _, src := fixture(t)
	dir, _ := NewDirStore(t.TempDir())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src.Now = func() time.Time { now = now.Add(6 * time.Hour); return now }

	svc, err := NewService(src, nil, nil, testutil.QuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	svc.handleStream(rec, httptest.NewRequest(http.MethodGet, "/admin/backup", nil))
	manual := rec.Header().Get(HeaderID)
	if _, err := Receive(tctx(t), rec.Body, manual, dir); err != nil {
		t.Fatal(err)
	}
	var scheduled []string
	for range 3 {
		m, err := Write(tctx(t), src, &StoreSink{Store: dir})
		if err != nil {
			t.Fatal(err)
		}
		scheduled = append(scheduled, m.ID)
	}
	if err := Prune(tctx(t), dir, 2, now, testutil.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	left, _ := dir.IDs(tctx(t))
	want := []string{manual, scheduled[1], scheduled[2]}
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("after Prune (keep 2): %v, want the backup taken by hand %s and the two newest scheduled %v", left, manual, scheduled[1:])
	}
}
