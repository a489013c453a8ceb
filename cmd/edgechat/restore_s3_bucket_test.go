package main

import (
	"os"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestRestoreFromAMissingBucketCreatesNothing: `edgechat restore --from
// s3://B/…` only reads B. With B missing (a typo, the wrong endpoint) it
// created B, an empty bucket left behind on the object store, and then
// said that B held no backup; with read-only credentials, the usual ones
// for a restore, it failed on the bucket creation instead ("Access
// Denied") without saying that there is no such bucket. Real MinIO.
func TestRestoreFromAMissingBucketCreatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	mi := storetest.StartMinIO(t)
	bin := edgechatBinary(t)
	data := t.TempDir()
	_, err := runCLIErr(bin, "", "restore", "--from", "s3://no-such-backups/edge", "--data", data,
		"--s3-endpoint", mi.URL, "--s3-access-key", mi.AccessKey, "--s3-secret-key", mi.SecretKey)
	if err == nil || !strings.Contains(err.Error(), "no-such-backups") || !strings.Contains(err.Error(), "no bucket") {
		t.Errorf("restore from a missing bucket: %v; want an error naming the missing bucket", err)
	}
	c, err := minio.New(mi.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(mi.AccessKey, mi.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BucketExists(t.Context(), "no-such-backups"); err != nil || ok {
		t.Errorf("after the restore, bucket no-such-backups exists: %v %v", ok, err)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Errorf("the refused restore wrote %v", ents)
	}
}
