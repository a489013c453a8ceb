package fsm

import (
	"fmt"
	"testing"
)

// BenchmarkApplyEntry (make bench): the FSM's cost per applied entry of
// n commands that each write one key — the transaction, the applied
// index and the dispatch around the handlers, what a Raft entry of a few
// chat messages pays besides the messages themselves.
func BenchmarkApplyEntry(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("commands=%d", n), func(b *testing.B) {
			f, _ := newFSM(b)
			cmds := make([]Command, n)
			for i := range cmds {
				cmds[i] = put(fmt.Sprintf("k%03d", i), "a value of some thirty bytes..")
			}
			data := EncodeBatch(cmds)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			index := uint64(0)
			for b.Loop() {
				index++
				e := entry(index)
				e.Data = data
				if res := f.Apply(e).([]Result); res[0].Err != nil {
					b.Fatal(res[0].Err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int(index)*n), "ns/command")
		})
	}
}
