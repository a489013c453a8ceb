// Package sysmon keeps the Go runtime's system monitor from polling
// every 20 µs after each idle moment of a server.
//
// The runtime's monitor thread (sysmon) sleeps deeply while every P is
// idle, and the next system call wakes it and resets its pace: it then
// sleeps 20 µs at a time for at least fifty rounds before it backs off
// towards 10 ms. A chat node at moderate load goes idle between nearly
// every two messages, so the monitor spends most of its time in those
// short sleeps: each is a timer, a context switch and, in a virtual
// machine, exits to the hypervisor. perf saw it take 17.5% of one
// node's CPU at 500 durable messages a second and 41% of an idle
// three-node cluster's (docs/perf/sysmon.md).
//
// The runtime has no setting for the monitor's pace, but it never lets
// the monitor sleep deeply while a scheduler trace is on, so that the
// trace keeps its period. A trace period of 2^31−1 ms (24.8 days) keeps
// the monitor awake and pacing itself: it backs off to 10 ms once there
// is nothing to retake and comes back to 20 µs when it does retake a P
// from a system call, which is the work it is there for. The cost: a
// process whose monotonic clock (time since the machine booted) passes
// 24.8 days prints one scheduler trace line to stderr then and every
// 24.8 days after, and a fatal runtime error prints the scheduler's
// state before the stacks.
//
// Only with two Ps or more. The monitor's 20 µs pace also hands the P
// of a goroutine blocked in a system call (an fsync) to the goroutines
// waiting for it; with more Ps they mostly run on another one, but with
// GOMAXPROCS=1 they wait for the call to end once the monitor has backed
// off: one node pinned to one core at 5,000 durable messages a second
// had its PUBACK p99 go from 28–36 ms to 31–62 ms, though its CPU per
// message fell by 6% and its p50 by a fifth in three runs of four. A
// one-core box keeps the runtime's default; its operator can choose
// otherwise with the GODEBUG below.
//
// The runtime reads this setting only when the process starts, so
// Reexec starts the program again with it in GODEBUG. A GODEBUG that
// already names schedtrace is left as it is: GODEBUG=schedtrace=0 runs
// with the runtime's default, GODEBUG=schedtrace=2147483647 with this
// setting whatever the number of Ps.
package sysmon

import (
	"os"
	"runtime"
	"slices"
	"strings"
)

// Setting is the GODEBUG entry Env adds.
const Setting = "schedtrace=2147483647"

// Env returns env (in os.Environ's form) with Setting added to GODEBUG,
// and whether it added it: false when GODEBUG already sets schedtrace.
func Env(env []string) ([]string, bool) {
	for i, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		// The first GODEBUG is the one the runtime reads.
		if setsSchedtrace(v) {
			return env, false
		}
		if v != "" {
			v += ","
		}
		out := slices.Clone(env)
		out[i] = "GODEBUG=" + v + Setting
		return out, true
	}
	return append(slices.Clone(env), "GODEBUG="+Setting), true
}

func setsSchedtrace(godebug string) bool {
	for field := range strings.SplitSeq(godebug, ",") {
		if k, _, _ := strings.Cut(field, "="); strings.TrimSpace(k) == "schedtrace" {
			return true
		}
	}
	return false
}

// Reexec replaces the process with the same program and arguments under
// Env(os.Environ()) when that adds Setting and the runtime has two Ps or
// more. It returns nil without doing anything when the setting is there
// already (the process was started again, or the operator chose), with
// one P, and on systems without exec; otherwise it returns only if it
// failed, and the caller goes on with the runtime's default.
func Reexec() error {
	if runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	env, changed := Env(os.Environ())
	if !changed {
		return nil
	}
	return startAgain(env)
}
