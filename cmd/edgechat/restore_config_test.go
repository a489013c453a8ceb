package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestRestoreReadsTheConfigFileServeReads: an operator who runs serve
// with --config (a ConfigMap, /etc/edgechat.yaml) keeps the data
// directory, media on S3 (and so sealed segments in the S3 archive
// bucket) and the S3 credentials in that file. `edgechat restore` did not
// accept --config ("flag provided but not defined"), and without it put
// the backup's segments into {data}/archive while the restored node read
// them from the bucket. Now restore takes from the file (and EDGECHAT_*
// over it, as serve) what its command line does not give: the new
// node's data directory, its archive store and the S3 settings; the
// node started with the same file serves every message.
func TestRestoreReadsTheConfigFileServeReads(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	mi := storetest.StartMinIO(t)
	bin := edgechatBinary(t)
	store := sealedBackup(t, bin)

	sc := mi.Config("cfgrestore")
	newDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "edgechat.yaml")
	yaml := fmt.Sprintf("data: %q\nmedia_store: s3\ns3_endpoint: %q\ns3_access_key: %q\ns3_secret_key: %q\n"+
		"s3_raw_bucket: %q\ns3_processed_bucket: %q\ns3_cold_bucket: %q\ns3_archive_bucket: %q\n",
		newDir, sc.Endpoint, sc.AccessKey, sc.SecretKey, sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket, sc.RawBucket+"-archive")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Log(runCLI(t, bin, "", "restore", "--from", store, "--config", cfg))
	if _, err := os.Stat(filepath.Join(newDir, "archive")); err == nil {
		t.Fatal("restore put the segments into {data}/archive: the node reads them from the S3 archive bucket")
	}
	p2 := startServe(t, bin, "--config", cfg, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	restoredServesEveryMessage(t, bin, newDir, p2)
}
