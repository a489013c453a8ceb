package table

// Our patch (PATCHES.md, patch 3): a table builder yields the processor
// after each block, so that with one processor the goroutines woken
// while a flush or compaction builds a table run between its blocks
// rather than once per 10 ms time slice.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

func TestBuilderYieldsBetweenBlocks(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, c := range []options.CompressionType{options.None, options.ZSTD} {
		t.Run(fmt.Sprint("compression=", c), func(t *testing.T) {
			opts := Options{BlockSize: 4 << 10, BloomFalsePositive: 0.01, Compression: c, ZSTDCompressionLevel: 1, TableSize: 64 << 20, AllocPool: z.NewAllocatorPool(1)}
			// Another goroutine that wants the processor: it counts its
			// turns and gives the processor back after each.
			var turns atomic.Int64
			var stop atomic.Bool
			done := make(chan struct{})
			go func() {
				defer close(done)
				for !stop.Load() {
					turns.Add(1)
					runtime.Gosched()
				}
			}()
			runtime.Gosched() // let it start
			b := NewTableBuilder(opts)
			rng := rand.New(rand.NewPCG(1, 2))
			val := make([]byte, 200)
			for i := 0; i < 40000; i++ {
				for j := range val {
					val[j] = byte('a' + rng.IntN(26))
				}
				key := y.KeyWithTs(binary.BigEndian.AppendUint64([]byte("key/"), uint64(i)), 1)
				b.Add(key, y.ValueStruct{Value: val}, 0)
			}
			before := turns.Load()
			b.Finish()
			blocks := len(b.blockList)
			during := turns.Load()
			stop.Store(true)
			<-done
			b.Close()
			if blocks < 1000 {
				t.Fatalf("only %d blocks: the test needs a big table", blocks)
			}
			// Without the yield the other goroutine runs only when the
			// builder is preempted (every 10 ms): a handful of turns for
			// the whole table.
			if during < int64(blocks)/4 {
				t.Errorf("the other goroutine ran %d times while %d blocks were built (%d of them before Finish); want a turn between blocks", during, blocks, before)
			}
		})
	}
}
