package pagecache

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func willNeed(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}

func dontNeed(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // gone: nothing cached
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("pagecache: evicting %s: %w", path, err)
	}
	return nil
}

// residentBytes maps the file (without touching its pages) and asks
// mincore which of its pages are in the page cache.
func residentBytes(path string, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("pagecache: mapping %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, fmt.Errorf("pagecache: mincore %s: %w", path, e)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += page
		}
	}
	return min(n, size), nil
}

// memAvailable is the memory available for new work: the kernel's
// estimate without swapping (MemAvailable in /proc/meminfo, reclaimable
// page cache included), or less when the process's memory cgroup (a
// container's limit) leaves less: /proc/meminfo shows the host's
// memory, and page cache read in is charged to the cgroup.
func memAvailable() (int64, bool) {
	return memAvailableUnder("/")
}

func memAvailableUnder(root string) (int64, bool) {
	data, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, false
	}
	var avail int64
	found := false
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			avail, found = kb<<10, err == nil
			break
		}
	}
	if !found {
		return 0, false
	}
	if room, ok := cgroupRoom(root); ok {
		avail = min(avail, room)
	}
	return avail, true
}

// cgroupRoom is the memory the process's cgroup may still take (limit
// less usage), from cgroup v2 (memory.max, memory.current) or v1
// (memory.limit_in_bytes, memory.usage_in_bytes); ok is false without
// a limit. The cgroup's own directory is tried first, then the mount's
// root (a container with its own cgroup namespace sees itself there).
func cgroupRoom(root string) (int64, bool) {
	data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dirs []string
		var limitFile, usageFile string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dirs = []string{"sys/fs/cgroup" + parts[2], "sys/fs/cgroup"}
			limitFile, usageFile = "memory.max", "memory.current"
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			dirs = []string{"sys/fs/cgroup/memory" + parts[2], "sys/fs/cgroup/memory"}
			limitFile, usageFile = "memory.limit_in_bytes", "memory.usage_in_bytes"
		default:
			continue
		}
		for _, d := range dirs {
			limit, ok1 := readInt(filepath.Join(root, d, limitFile))
			usage, ok2 := readInt(filepath.Join(root, d, usageFile))
			if ok1 && ok2 && limit < 1<<60 { // v1 writes a huge number for "no limit"
				return max(0, limit-usage), true
			}
		}
	}
	return 0, false
}

// readInt reads a file holding one number ("max" and the like: false).
func readInt(path string) (int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}
