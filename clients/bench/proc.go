package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoField is returned when a /proc file lacks the field asked for.
var ErrNoField = errors.New("field not found")

// ParseVmRSS reads the VmRSS line of a /proc/PID/status file and returns
// the resident set size in KB ("VmRSS:    123456 kB").
func ParseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		return kb, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("VmRSS: %w", ErrNoField)
}

// ReadRSS returns the VmRSS of process pid in KB.
func ReadRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading RSS of pid %d: %w", pid, err)
	}
	defer f.Close()
	kb, err := ParseVmRSS(f)
	if err != nil {
		return 0, fmt.Errorf("reading RSS of pid %d: %w", pid, err)
	}
	return kb, nil
}

// ParseMaxOpenFiles reads the soft "Max open files" limit from a
// /proc/PID/limits file; -1 means unlimited.
func ParseMaxOpenFiles(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			return 0, fmt.Errorf("malformed limits line %q", sc.Text())
		}
		if f[0] == "unlimited" {
			return -1, nil
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed limits line %q", sc.Text())
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("max open files: %w", ErrNoField)
}

// ReadMaxOpenFiles returns the soft open-file limit of process pid.
func ReadMaxOpenFiles(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseMaxOpenFiles(f)
}

// RaiseNoFile raises this process's soft RLIMIT_NOFILE to at least want
// (up to the hard limit, and the hard limit too when permitted) and
// returns the soft limit in force afterwards.
func RaiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	if lim.Max < want {
		// Only root may raise the hard limit; try, and fall back to it.
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return want, nil
		}
		want = lim.Max
	}
	lim.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ParseCPUTime returns user+system CPU time from a /proc/PID/stat line.
func ParseCPUTime(stat []byte) (time.Duration, error) {
	s := string(stat)
	// comm may contain spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", truncate(s, 80))
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat %q", truncate(s, 80))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || ut < 0 || st < 0 {
		return 0, fmt.Errorf("malformed stat %q", truncate(s, 80))
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ReadCPUTime returns the CPU time process pid has used.
func ReadCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseCPUTime(b)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
