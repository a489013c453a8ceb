package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnvMC names the variable that points at an mc binary (MinIO's client).
const EnvMC = "EDGECHAT_MC"

// FindMC returns the mc binary that configures remote tiers: $EDGECHAT_MC,
// then the newest ${XDG_CACHE_HOME:-$HOME/.cache}/edgechat-mc/*/mc (where
// `make mc` and .ci/run build it, one directory per version). Not mc on
// PATH: on Debian that name is Midnight Commander, and an mc of another
// age may not speak the pinned server's admin API.
func FindMC() (string, error) {
	if p := os.Getenv(EnvMC); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("$%s=%s: %w", EnvMC, p, err)
		}
		return p, nil
	}
	if cache, err := os.UserCacheDir(); err == nil {
		versions, _ := filepath.Glob(filepath.Join(cache, "edgechat-mc", "*", "mc"))
		sort.Slice(versions, func(i, j int) bool { return modTime(versions[i]).After(modTime(versions[j])) })
		for _, p := range versions {
			if executable(p) == nil {
				return p, nil
			}
		}
	}
	return "", errors.New("no mc binary (MinIO's client, which configures remote tiers): set $" + EnvMC + ", or run `make mc` (builds it into ~/.cache/edgechat-mc/VERSION/mc)")
}

// AddMinIOTier configures on hot a remote tier called name (tier type
// "minio") that keeps its objects in a new bucket of warm: MinIO accepts a
// lifecycle rule transitioning to a storage class only when a tier of that
// name exists. name must be upper case, as mc upper-cases it and the rule
// has to name it exactly. It returns the warm bucket. Without mc it skips
// the test, except with CI=true, where it fails it: CI must run it.
func AddMinIOTier(t testing.TB, hot MinIO, name string, warm MinIO) (bucket string) {
	t.Helper()
	if name == "" || name != strings.ToUpper(name) {
		t.Fatalf("storetest: tier name %q: want upper case", name)
	}
	bin, err := FindMC()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("storetest: CI=true and %v", err)
		}
		t.Skipf("storetest: skipping the remote-tier test: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b [4]byte
	rand.Read(b[:])
	bucket = "tier-" + hex.EncodeToString(b[:])
	wc, err := minio.New(warm.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(warm.AccessKey, warm.SecretKey, "")})
	if err != nil {
		t.Fatalf("storetest: client of the warm MinIO: %v", err)
	}
	if err := wc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("storetest: bucket %s on the warm MinIO: %v", bucket, err)
	}
	// The alias comes from the environment (MC_HOST_<alias>) and the
	// configuration directory is the test's own: nothing is read from or
	// written to ~/.mc.
	cmd := exec.CommandContext(ctx, bin, "--config-dir", t.TempDir(), "--quiet", "--no-color",
		"ilm", "tier", "add", "minio", "hot", name,
		"--endpoint", warm.URL, "--access-key", warm.AccessKey, "--secret-key", warm.SecretKey, "--bucket", bucket)
	cmd.Env = append(os.Environ(), "MC_HOST_hot=http://"+hot.AccessKey+":"+hot.SecretKey+"@"+hot.Endpoint)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("storetest: %s ilm tier add minio %s on %s (warm %s/%s): %v\n%s", bin, name, hot.Endpoint, warm.Endpoint, bucket, err, out)
	}
	return bucket
}
