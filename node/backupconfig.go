package node

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultBackupKeep is how many scheduled backups are kept by default.
const DefaultBackupKeep = 7

var backupSettings = []setting{
	{name: "backup-every", usage: "take a backup of the cluster this often (on the Raft leader), into --backup-to", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.BackupEvery })},
	{name: "backup-to", usage: "where scheduled backups go: a directory or s3://bucket/prefix (with --s3-endpoint)", set: stringSetter(func(c *Config) *string { return &c.BackupTo })},
	{name: "backup-keep", usage: "how many scheduled backups to keep (older ones are deleted)", set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("want a number >= 1, got %q", v)
		}
		c.BackupKeep = n
		return nil
	}},
}

// backupToS3 reports whether scheduled backups go to S3.
func (c Config) backupToS3() bool { return strings.HasPrefix(c.BackupTo, "s3://") }

func (c Config) validateBackup() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case c.BackupEvery < 0:
		return bad("--backup-every must be positive")
	case c.BackupEvery > 0 && c.BackupTo == "":
		return bad("--backup-every needs --backup-to (a directory or s3://bucket/prefix)")
	case c.BackupTo != "" && c.BackupEvery == 0:
		return bad("--backup-to needs --backup-every")
	case c.BackupEvery > 0 && c.BackupEvery < time.Second:
		return bad("--backup-every %v: want at least 1s", c.BackupEvery)
	case c.BackupKeep < 1:
		return bad("--backup-keep %d: want at least 1", c.BackupKeep)
	case c.backupToS3() && strings.TrimPrefix(c.BackupTo, "s3://") == "":
		return bad("--backup-to %q: want s3://bucket/prefix", c.BackupTo)
	case c.backupToS3() && c.S3Endpoint == "":
		return bad("--backup-to %s needs --s3-endpoint", c.BackupTo)
	case strings.Contains(c.BackupTo, "://") && !c.backupToS3():
		return bad("--backup-to %q: want a directory or s3://bucket/prefix", c.BackupTo)
	}
	return nil
}
