package backup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/edgechat/edgechat/internal/testutil"

	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestS3RoundTrip against a real MinIO (skipped without a binary, except
// with CI=true): a backup into s3://bucket/prefix, listed, verified and
// restored into a directory; a damaged object refused; pruning deletes
// every object of a backup.
func TestS3RoundTrip(t *testing.T) {
	mi := storetest.StartMinIO(t)
	cfg := S3Config{Endpoint: mi.URL, AccessKey: mi.AccessKey, SecretKey: mi.SecretKey}
	_, _, src := fixture(t)
	st, err := OpenStore(tctx(t), "s3://edgechat-backups/cluster-a/nightly", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.String() != "s3://edgechat-backups/cluster-a/nightly/" {
		t.Fatalf("store %s", st)
	}
	m, err := Write(tctx(t), src, &StoreSink{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	id, err := Latest(tctx(t), st)
	if err != nil || id != m.ID {
		t.Fatalf("Latest %q %v", id, err)
	}
	data := t.TempDir()
	if _, err := Restore(tctx(t), st, id, restoreOpts(data)); err != nil {
		t.Fatal(err)
	}
	// Damage one object: refused, nothing written.
	client := st.(*S3Store).client
	key := "cluster-a/nightly/" + id + "/segments/g/g1/5-9.seg"
	if _, err := client.PutObject(context.Background(), "edgechat-backups", key, strings.NewReader("segment twO"), 11, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(tctx(t), st, id, restoreOpts(t.TempDir())); !errors.Is(err, ErrDamaged) {
		t.Fatalf("damaged S3 backup: %v", err)
	}

	// Keep 1 deletes the first with all its objects.
	// A second backup with the first as Prev: its segments are copied
	// server-side, the archive store is not read (the damaged object is
	// put right first: a copy would carry the damage, and restore would
	// refuse it).
	if _, err := client.PutObject(context.Background(), "edgechat-backups", key, strings.NewReader("segment two"), 11, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	src.Segments = memSegments{}
	sink := &StoreSink{Store: st, Prev: m}
	m2, err := Write(tctx(t), src, sink)
	if err != nil || sink.Reused != 3 {
		t.Fatalf("second backup: reused %d: %v", sink.Reused, err)
	}
	if err := Prune(tctx(t), st, 1, time.Now(), testutil.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	ids, err := st.IDs(tctx(t))
	if err != nil || len(ids) != 1 || ids[0] != m2.ID {
		t.Fatalf("after prune: %v %v", ids, err)
	}
	for obj := range client.ListObjects(context.Background(), "edgechat-backups", minio.ListObjectsOptions{Prefix: "cluster-a/nightly/" + id, Recursive: true}) {
		t.Fatalf("object %s of the pruned backup remains", obj.Key)
	}
	if _, err := Restore(tctx(t), st, m2.ID, restoreOpts(t.TempDir())); err != nil {
		t.Fatalf("restore of the second backup after the first was pruned: %v", err)
	}
}
