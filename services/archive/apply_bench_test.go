package archive

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/badgeropts"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// BenchmarkApplyDirectEntries applies Raft entries of direct messages
// the way a saturated node does (issue 10's bench: 200 senders to 10
// receivers, ~90 commands per entry, IDs from one generator), straight
// into the FSM: the handler, the transaction, Badger's memtable and its
// background work. Besides ns/msg it reports cpu-ns/msg, the process's
// CPU time (user + system, all goroutines, Badger's included) per
// message, which a machine shared with other work disturbs less than
// wall time. The store grows with b.N (cids stay unique).
//
// The "badger=node" variant opens Badger the way a node does
// (nodeBadgerOptions), so that its memtable, flushes and compactions
// cost what they cost in production. The "ids=overtaken" variant
// reverses the IDs of every eight messages of an entry, as publishes
// that took their IDs in one order and reached the log in another
// (idtops.go).
func BenchmarkApplyDirectEntries(b *testing.B) {
	for _, c := range []struct {
		per       int
		opts      func(badger.Options) badger.Options
		name      string
		overtaken bool
	}{{1, nil, "", false}, {90, nil, "", false}, {90, nodeBadgerOptions, ",badger=node", false}, {90, nil, ",ids=overtaken", true}} {
		per := c.per
		b.Run(fmt.Sprintf("per-entry=%d%s", per, c.name), func(b *testing.B) {
			var eo []envOpt
			if c.opts != nil {
				eo = append(eo, withBadger(c.opts))
			}
			e := newEnv(b, eo...)
			gen, err := snowflake.NewGenerator(1)
			if err != nil {
				b.Fatal(err)
			}
			body := "a message of about a hundred bytes, as the throughput bench sends: lorem ipsum dolor sit amet.."
			index := e.prop.Index()
			n := 0
			entry := func() *raft.Log {
				cmds := make([]fsm.Command, per)
				ids := make([]snowflake.ID, per)
				for i := range ids {
					ids[i] = gen.Next()
				}
				if c.overtaken {
					for i := 0; i+8 <= len(ids); i += 8 {
						slices.Reverse(ids[i : i+8])
					}
				}
				for i := range cmds {
					n++
					from, to := fmt.Sprintf("sender%03d", n%200), fmt.Sprintf("recv%02d", n%10)
					env := text(fmt.Sprintf("cid-%d-%d", n%200, n), body)
					env.ID, env.From, env.To = ids[i], from, to
					c := msgCmd{ID: env.ID, From: from, To: to, CID: env.CID, Payload: env.Marshal()}
					cmds[i] = fsm.Command{Type: wire.CmdMessage, Payload: c.encode()}
				}
				index++
				return &raft.Log{Index: index, Type: raft.LogCommand, Data: fsm.EncodeBatch(cmds)}
			}
			entries := make([]*raft.Log, 0, b.N/per+1)
			for range b.N/per + 1 {
				entries = append(entries, entry())
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for _, l := range entries {
				for _, r := range e.f.Apply(l).([]fsm.Result) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			cpu := cpuTime() - cpu0
			b.StopTimer()
			msgs := float64(len(entries) * per)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
			b.ReportMetric(float64(cpu.Nanoseconds())/msgs, "cpu-ns/msg")
		})
	}
}

// nodeBadgerOptions opens the harness's database (in o.Dir, with
// o.Logger) with the options a node opens its own with.
func nodeBadgerOptions(o badger.Options) badger.Options {
	return badgeropts.Node(o.Dir).WithLogger(o.Logger)
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
