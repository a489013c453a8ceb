package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/media/store"
)

// MinIO is a MinIO server started for a test.
type MinIO struct {
	Endpoint  string // host:port, for store.S3Config.Endpoint
	URL       string // http://host:port
	AccessKey string
	SecretKey string
	DataDir   string
	// Stop ends the server (idempotent); it is also registered with the
	// test's Cleanup.
	Stop func()
}

// Config returns a store configuration on m with buckets named after
// prefix (3 to 40 bytes of [a-z0-9-]), unique per call so that tests
// sharing a server do not see each other's objects.
func (m MinIO) Config(prefix string) store.S3Config {
	var b [4]byte
	rand.Read(b[:])
	p := prefix + "-" + hex.EncodeToString(b[:])
	return store.S3Config{
		Endpoint:        m.Endpoint,
		AccessKey:       m.AccessKey,
		SecretKey:       m.SecretKey,
		RawBucket:       p + "-raw",
		ProcessedBucket: p + "-processed",
		ColdBucket:      p + "-cold",
	}
}

// EnvBinary names the variable that points at a MinIO binary.
const EnvBinary = "EDGECHAT_MINIO"

// FindMinIO returns the MinIO binary to test with: $EDGECHAT_MINIO, then
// $HOME/.cache/edgechat-minio/bin/minio, then the newest
// ${XDG_CACHE_HOME:-$HOME/.cache}/edgechat-minio/*/minio (where `make
// minio` and .ci/run build it, one directory per version), then minio on
// PATH.
func FindMinIO() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("$%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	var candidates []string
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "edgechat-minio", "bin", "minio"))
	}
	if cache, err := os.UserCacheDir(); err == nil { // $XDG_CACHE_HOME or ~/.cache
		versions, _ := filepath.Glob(filepath.Join(cache, "edgechat-minio", "*", "minio"))
		sort.Slice(versions, func(i, j int) bool { return modTime(versions[i]).After(modTime(versions[j])) })
		candidates = append(candidates, versions...)
	}
	for _, p := range candidates {
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New("no MinIO binary: set $" + EnvBinary + ", or run `make minio` (builds it into ~/.cache/edgechat-minio/VERSION/minio), or put minio on PATH")
}

func modTime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// StartMinIO starts `minio server` on 127.0.0.1 with a temporary data
// directory and waits until it is ready. Without a binary it skips the
// test, except with CI=true, where it fails it: CI must run these tests.
// env adds KEY=VALUE settings to the server's environment (a notification
// target, say).
func StartMinIO(t testing.TB, env ...string) MinIO {
	t.Helper()
	bin, err := FindMinIO()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("storetest: CI=true and %v", err)
		}
		t.Skipf("storetest: skipping the S3 test: %v", err)
	}
	var key [12]byte
	rand.Read(key[:])
	m := MinIO{AccessKey: "edgechat-test", SecretKey: hex.EncodeToString(key[:])}
	// MinIO cannot listen on port 0 and report the port: pick free ports,
	// close them and hope nobody takes them before MinIO binds; on a clash
	// try again with others.
	const attempts = 5
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		stop, out, err := startOnce(t, bin, dir, &m, env)
		if err == nil {
			m.DataDir = dir
			m.Stop = stop
			t.Cleanup(stop)
			return m
		}
		if attempt == attempts || !strings.Contains(out, "already in use") && !errors.Is(err, errBindClash) {
			t.Fatalf("storetest: start %s: %v\n%s", bin, err, out)
		}
		t.Logf("storetest: MinIO attempt %d: port clash, retrying", attempt)
	}
}

var errBindClash = errors.New("port taken")

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// syncBuffer collects the server's output for error reports.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil // enough to diagnose
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startOnce(t testing.TB, bin, dir string, m *MinIO, env []string) (stop func(), output string, err error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	console, err := freePort()
	if err != nil {
		return nil, "", err
	}
	if addr == console {
		return nil, "", errBindClash
	}
	var out syncBuffer
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", // no console: less to start
		"MINIO_UPDATE=off",  // never reach out for updates
		"MINIO_CI_CD=1",     // no checks of the drive (tmpfs, overlay)
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so a stray child dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
	}
	m.Endpoint = addr
	m.URL = "http://" + addr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/minio/health/ready", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, out.String(), nil
			}
		}
		select {
		case err := <-exited:
			exited <- err // for stop
			stop()
			return nil, out.String(), fmt.Errorf("minio exited before it was ready: %v", err)
		case <-ctx.Done():
			stop()
			return nil, out.String(), errors.New("minio not ready within 60s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}
