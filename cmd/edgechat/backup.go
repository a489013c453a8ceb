package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/services/backup"
)

// s3Flags adds the S3 client flags of backup stores (the same names as
// serve's), with EDGECHAT_S3_* defaults.
func s3Flags(fs *flag.FlagSet) func() backup.S3Config {
	ep := fs.String("s3-endpoint", envOr("EDGECHAT_S3_ENDPOINT", ""), "S3 endpoint (host:port or URL) for s3:// places")
	region := fs.String("s3-region", envOr("EDGECHAT_S3_REGION", ""), "S3 region")
	ak := fs.String("s3-access-key", envOr("EDGECHAT_S3_ACCESS_KEY", ""), "S3 access key (default: the environment's AWS credentials)")
	sk := fs.String("s3-secret-key", envOr("EDGECHAT_S3_SECRET_KEY", ""), "S3 secret key")
	return func() backup.S3Config {
		return backup.S3Config{Endpoint: *ep, Region: *region, AccessKey: *ak, SecretKey: *sk}
	}
}

// backupCmd: edgechat backup --to DIR|s3://bucket/prefix [--server URL]
// [--data DIR | --token T] [--s3-*]
//
// The node streams a consistent backup (GET /admin/backup); this writes
// it to the store under its ID, checking every file against the node's
// manifest, and writes the manifest last.
func backupCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs, server, data := adminFlags("backup")
	to := fs.String("to", envOr("EDGECHAT_BACKUP_TO", ""), "where to write the backup: a directory or s3://bucket/prefix")
	token := fs.String("token", envOr("EDGECHAT_TOKEN", ""), "an admin's access token (instead of --data)")
	s3 := s3Flags(fs)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return fmt.Errorf("%w: edgechat backup --to DIR|s3://bucket/prefix [--server URL] [--data DIR | --token T]", errUsage)
	}
	st, err := backup.OpenStore(ctx, *to, s3())
	if err != nil {
		return err
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*server, "/")+"/admin/backup", nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	tok := *token
	if tok == "" {
		if tok, err = operatorToken(*data); err != nil {
			return err
		}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req) // no timeout: a large backup streams for long
	if err != nil {
		return fmt.Errorf("contacting %s: %w", *server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("GET /admin/backup: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	id := resp.Header.Get(backup.HeaderID)
	m, err := backup.Receive(ctx, resp.Body, id, st)
	if err != nil {
		if backup.ValidID(id) == nil {
			_ = st.Delete(context.WithoutCancel(ctx), id) // an incomplete backup is of no use
		}
		return fmt.Errorf("backup failed, nothing kept: %w", err)
	}
	fmt.Fprintf(stdout, "backup %s: applied index %d, %d segments, %d bytes, %.1fs, in %s\n",
		m.ID, m.AppliedIndex, m.Segments(), m.Bytes(), time.Since(start).Seconds(), joinStore(st.String(), m.ID))
	return nil
}

func joinStore(store, id string) string {
	if strings.HasPrefix(store, "s3://") {
		return strings.TrimRight(store, "/") + "/" + id
	}
	return filepath.Join(store, id)
}

// restoreCmd: edgechat restore --from DIR|s3://… --data DIR [--id ID]
// [--config FILE] [--archive-store local|s3 [--s3-archive-bucket B]] [--s3-*]
//
// With --config (or EDGECHAT_CONFIG), the settings restore needs that
// the command line does not give come from the configuration serve will
// run the new node with (the file, overridden by EDGECHAT_* variables,
// as serve reads them): data, archive_store (else media_store),
// s3_archive_bucket and the s3_* client settings.
func restoreCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "a backup (a directory or s3:// prefix holding manifest.json), or a place holding backups (the newest complete one is restored)")
	data := fs.String("data", "", "the data directory of the new cluster's first node (must not hold a node); default with --config: its data")
	config := fs.String("config", envOr("EDGECHAT_CONFIG", ""), "the YAML configuration file serve will run the new node with (env EDGECHAT_CONFIG): data, archive and S3 settings the command line does not give")
	id := fs.String("id", "", "with --from naming a place of backups: restore this one instead of the newest")
	// The default is serve's: EDGECHAT_ARCHIVE_STORE, else the media
	// store's kind (EDGECHAT_MEDIA_STORE), else local. An environment that
	// runs serve with media on S3 keeps its segments in the S3 archive
	// bucket, and segments restored to {data}/archive would not be read.
	archiveStore := fs.String("archive-store", envOr("EDGECHAT_ARCHIVE_STORE", envOr("EDGECHAT_MEDIA_STORE", node.MediaStoreLocal)),
		"the new cluster's archive store for the segments: local ({data}/archive) or s3 (--s3-archive-bucket on the --s3-* store); default: as serve in this environment (EDGECHAT_ARCHIVE_STORE, else EDGECHAT_MEDIA_STORE, else local)")
	archiveBucket := fs.String("s3-archive-bucket", envOr("EDGECHAT_S3_ARCHIVE_BUCKET", node.DefaultS3ArchiveBucket), "with --archive-store s3: the bucket")
	adopt := fs.Bool("adopt-archive-store", false, "restore into an archive store that holds segments the backup does not (the old cluster's newer ones): only when no cluster uses that store any more, since the restored cluster deletes them as orphans")
	s3flags := s3Flags(fs)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	s3cfg := s3flags()
	s3 := func() backup.S3Config { return s3cfg }
	if *config != "" {
		cfg, err := node.LoadSettings([]string{"--config", *config}, os.Environ())
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, d := range []struct {
			flag string
			dst  *string
			val  string
		}{
			{"data", data, cfg.DataDir},
			{"archive-store", archiveStore, cfg.ArchiveStoreKind()},
			{"s3-archive-bucket", archiveBucket, cfg.S3ArchiveBucket},
			{"s3-endpoint", &s3cfg.Endpoint, cfg.S3Endpoint},
			{"s3-region", &s3cfg.Region, cfg.S3Region},
			{"s3-access-key", &s3cfg.AccessKey, cfg.S3AccessKey},
			{"s3-secret-key", &s3cfg.SecretKey, cfg.S3SecretKey},
		} {
			if !set[d.flag] {
				*d.dst = d.val
			}
		}
	}
	if *from == "" || *data == "" {
		return fmt.Errorf("%w: edgechat restore --from DIR|s3://bucket/prefix --data DIR [--config FILE]", errUsage)
	}
	if !strings.HasPrefix(*from, "s3://") {
		if _, err := os.Stat(*from); err != nil {
			return fmt.Errorf("no backup at %s: %w", *from, err)
		}
	}
	start := time.Now()
	st, bid, err := findBackup(ctx, *from, *id, s3())
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := backup.RestoreOptions{
		DataDir: *data,
		OpenDB: func(dir string) (*badger.DB, error) {
			return node.OpenDatabase(dir, slog.New(slog.DiscardHandler))
		},
		DropPrefixes: node.RestoreDropPrefixes(),
		RefOf:        node.BackupRefOf,
		Check:        node.RestoreCheck,
		Log:          log,
		AdoptArchive: *adopt,
	}
	// Opened at the first segment: after the backup is verified, so
	// that a refused restore creates nothing.
	segs := &lazySegments{open: func() (node.ArchiveSegments, func() error, error) {
		return node.OpenRestoreArchive(ctx, *archiveStore, *data, s3(), *archiveBucket)
	}}
	defer segs.Close()
	opts.Segments = segs
	m, err := backup.Restore(ctx, st, bid, opts)
	if errors.Is(err, backup.ErrArchiveInUse) {
		return fmt.Errorf("restore refused, nothing written: %w (another --s3-archive-bucket, or --adopt-archive-store)", err)
	}
	if err != nil {
		return fmt.Errorf("restore refused, nothing written: %w", err)
	}
	fmt.Fprintf(stdout, "restored backup %s (applied index %d, taken %s, %d segments, %d bytes) into %s in %.1fs\n"+
		"start it alone as the first node of the new cluster (edgechat serve --data %s, no --join), then join the others to it\n",
		m.ID, m.AppliedIndex, m.Created.Format(time.RFC3339), m.Segments(), m.Bytes(), *data, time.Since(start).Seconds(), *data)
	return nil
}

// findBackup resolves --from: a backup itself (it holds manifest.json)
// or a place holding backups (id, or the newest complete one).
func findBackup(ctx context.Context, from, id string, s3 backup.S3Config) (backup.Store, string, error) {
	if id == "" {
		parent, last := splitLast(from)
		if parent != "" && backup.ValidID(last) == nil {
			st, err := backup.OpenStoreToRead(ctx, parent, s3)
			if err != nil {
				return nil, "", err
			}
			if rc, err := st.Open(ctx, last+"/"+backup.ManifestName); err == nil {
				rc.Close()
				return st, last, nil
			}
		}
	}
	st, err := backup.OpenStoreToRead(ctx, from, s3)
	if err != nil {
		return nil, "", err
	}
	if id != "" {
		return st, id, nil
	}
	latest, err := backup.Latest(ctx, st)
	if errors.Is(err, backup.ErrNotFound) {
		return nil, "", fmt.Errorf("%w: %s holds no complete backup (a backup is a directory with %s)", err, from, backup.ManifestName)
	}
	return st, latest, err
}

// splitLast splits "a/b/c" (or s3://bucket/a/c) into its parent and last
// element.
func splitLast(p string) (parent, last string) {
	p = strings.TrimRight(p, "/")
	if rest, ok := strings.CutPrefix(p, "s3://"); ok {
		if !strings.Contains(rest, "/") {
			return "", ""
		}
		return "s3://" + path.Dir(rest), path.Base(rest)
	}
	return filepath.Dir(p), filepath.Base(p)
}

// operatorToken is a five-minute admin token signed with the node's own
// key from its data directory (what adminRequest sends).
func operatorToken(data string) (string, error) {
	return mintOperator(data, 5*time.Minute)
}

// lazySegments opens the new node's archive store on first use.
type lazySegments struct {
	open  func() (node.ArchiveSegments, func() error, error)
	segs  *node.ArchiveSegments
	close func() error
}

func (l *lazySegments) get() (*node.ArchiveSegments, error) {
	if l.segs == nil {
		s, c, err := l.open()
		if err != nil {
			return nil, err
		}
		l.segs, l.close = &s, c
	}
	return l.segs, nil
}

func (l *lazySegments) PutSegment(ctx context.Context, key string, r io.Reader, size int64) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.PutSegment(ctx, key, r, size)
}

func (l *lazySegments) ListSegments(ctx context.Context, fn func(key string, size int64) bool) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.ListSegments(ctx, fn)
}

func (l *lazySegments) DeleteSegment(ctx context.Context, key string) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.DeleteSegment(ctx, key)
}

func (l *lazySegments) Close() {
	if l.close != nil {
		_ = l.close()
	}
}
