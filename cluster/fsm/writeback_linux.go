package fsm

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to begin writing the file's dirty pages
// out, without waiting for them (sync_file_range with WRITE only).
func startWriteback(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	return unix.SyncFileRange(int(fh.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
