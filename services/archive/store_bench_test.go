package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/badgeropts"
	"github.com/edgechat/edgechat/internal/pagecache"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// latencies records one duration per benchmark iteration and reports
// the percentiles that the targets of issue 10 are stated in.
type latencies []time.Duration

func (l *latencies) time(start time.Time) { *l = append(*l, time.Since(start)) }

func (l latencies) report(b *testing.B) { l.reportAs(b, "") }

func (l latencies) reportAs(b *testing.B, name string) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	at := func(p float64) float64 { return float64(s[min(len(s)-1, int(float64(len(s))*p))].Nanoseconds()) }
	b.ReportMetric(at(0.50), name+"p50-ns")
	b.ReportMetric(at(0.99), name+"p99-ns")
}

// readCost measures what a read costs apart from the machine's load,
// which on a shared machine moves the wall-clock percentiles by several
// times: the CPU time of the reading thread (the loop is locked to its
// thread; Badger reads on the caller's goroutine), the major page faults
// (Badger's tables are mmapped: a major fault is a read from the disk,
// the cold part of a cold read) and the block-cache misses (each one a
// block decompressed) per call.
type readCost struct {
	db      *badger.DB
	cpu     latencies
	faults0 int64
	misses0 uint64
	calls   int
	start   time.Duration
	locked  bool
}

func newReadCost(db *badger.DB) *readCost {
	runtime.LockOSThread()
	c := &readCost{db: db, locked: true}
	c.faults0 = majorFaults()
	c.misses0 = c.db.BlockCacheMetrics().Misses()
	return c
}

func (c *readCost) begin() { c.start = threadCPU() }
func (c *readCost) end()   { c.cpu = append(c.cpu, threadCPU()-c.start); c.calls++ }

func (c *readCost) report(b *testing.B) {
	if c.locked {
		runtime.UnlockOSThread()
	}
	if c.calls == 0 {
		return
	}
	c.cpu.reportAs(b, "cpu-")
	b.ReportMetric(float64(majorFaults()-c.faults0)/float64(c.calls), "majflt/op")
	b.ReportMetric(float64(c.db.BlockCacheMetrics().Misses()-c.misses0)/float64(c.calls), "blockmiss/op")
}

// BenchmarkConversations lists the conversations of a user with 200
// conversations and 50,000 messages (half of them from the peers, a
// read cursor in every other conversation), the case of issue 10, where
// all of the store's recent traffic is that user's: each summary has
// been rewritten 250 times lately, and Badger's iterator steps over
// those versions until compaction drops them (BenchmarkLargeStore's
// conversations is the same user among a million messages of others).
func BenchmarkConversations(b *testing.B) {
	e := newEnv(b)
	const peers, perPeer = 200, 250
	id := snowflake.ID(1 << 30)
	var cmds []fsm.Command
	flush := func() {
		res, err := e.prop.ProposeBatch(context.Background(), cmds)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		cmds = cmds[:0]
	}
	for i := range perPeer {
		for p := range peers {
			from, to := "bob", "peer"+strconv.Itoa(p)
			if i%2 == 0 {
				from, to = to, from
			}
			id++
			env := text(fmt.Sprint("c", id), "a message of some sixty bytes, as chat messages often are")
			env.ID, env.From, env.To = id, from, to
			c := msgCmd{ID: id, From: from, To: to, CID: env.CID, Payload: env.Marshal()}
			cmds = append(cmds, fsm.Command{Type: wire.CmdMessage, Payload: c.encode()})
			if i == perPeer/2 && p%2 == 0 {
				cur := cursorCmd{Reader: "bob", Peer: "peer" + strconv.Itoa(p), UpTo: id}
				cmds = append(cmds, fsm.Command{Type: wire.CmdReadCursor, Payload: cur.encode()})
			}
			if len(cmds) >= 1000 {
				flush()
			}
		}
	}
	flush()
	b.ReportAllocs()
	var lat latencies
	for b.Loop() {
		start := time.Now()
		convs, _, err := e.svc.conversations(context.Background(), "bob", conversationsDefault)
		lat.time(start)
		if err != nil || len(convs) != peers {
			b.Fatal(len(convs), err)
		}
	}
	lat.report(b)
}

// storedMessages is how many messages BenchmarkLargeStore stores first:
// EDGECHAT_BENCH_STORED, or a million.
func storedMessages(b *testing.B) int {
	if s := os.Getenv("EDGECHAT_BENCH_STORED"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 10_000 {
			b.Fatalf("EDGECHAT_BENCH_STORED=%q: want a number ≥ 10000", s)
		}
		return n
	}
	return 1_000_000
}

// BenchmarkLargeStore reads a history page of 50, a sync of 1,000 missed
// messages and a conversation list from a store filled with storedMessages direct
// messages (set EDGECHAT_BENCH_STORED=10000000 for the 10M figure of
// issue 10; filling takes a while). The store is Badger with the node's
// options and is filled by a write loop with the keys and values the FSM
// handler writes for a direct message (bypassing Raft, to be quick):
// every tenth message is bob's (half of them with alice, the others with
// 199 other peers: at a million, bob has 200 conversations and 50,000
// messages), the others are between 10,000 other users.
//
// EDGECHAT_BENCH_LAYOUT=old fills the store in the layout from before
// bodies moved into the history keys (keys.go), to compare the two; a
// store kept in EDGECHAT_BENCH_DIR (below) keeps the layout it was
// filled with, whatever the variable says later.
//
// EDGECHAT_BENCH_DIR=DIR keeps the filled store in DIR and reuses it on
// the next run with the same EDGECHAT_BENCH_STORED (10M takes a quarter
// of an hour to fill): fill once, then measure the reads on a quiet
// machine after the fill's compactions have settled.
func BenchmarkLargeStore(b *testing.B) {
	n := storedMessages(b)
	dir, filled := b.TempDir(), false
	if d := os.Getenv("EDGECHAT_BENCH_DIR"); d != "" {
		dir = filepath.Join(d, "stored-"+strconv.Itoa(n))
		_, err := os.Stat(filepath.Join(dir, "filled"))
		filled = err == nil
	}
	// The node's options (internal/badgeropts).
	pageCacheState(b, dir, false)
	db, err := badger.Open(badgeropts.Node(dir).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	start := time.Now()
	firstID := snowflake.ID(1 << 40)
	if filled {
		b.Logf("reusing the %d messages stored in %s", n, dir)
	} else {
		fillDirect(b, db, n, firstID, os.Getenv("EDGECHAT_BENCH_LAYOUT") == "old")
		b.Logf("stored %d messages in %v", n, time.Since(start).Round(time.Millisecond))
		if os.Getenv("EDGECHAT_BENCH_DIR") != "" {
			if err := os.WriteFile(filepath.Join(dir, "filled"), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	pageCacheState(b, dir, true)
	for _, l := range db.Levels() {
		if l.NumTables > 0 {
			b.Logf("level %d: %d tables, %d MB", l.Level, l.NumTables, l.Size>>20)
		}
	}
	svc := &Service{db: db}
	conv := directConv("alice", "bob")

	b.Run("history50/newest", func(b *testing.B) {
		b.ReportAllocs()
		var lat latencies
		cost := newReadCost(db)
		for b.Loop() {
			t := time.Now()
			cost.begin()
			msgs, more, err := svc.historyPage(context.Background(), conv, nil, historyDefault)
			cost.end()
			lat.time(t)
			if err != nil || len(msgs) != historyDefault || !more {
				b.Fatal(len(msgs), err)
			}
		}
		lat.report(b)
		cost.report(b)
	})
	b.Run("history50/middle", func(b *testing.B) {
		b.ReportAllocs()
		var lat latencies
		cost := newReadCost(db)
		i := 0
		for b.Loop() {
			// A different page each time, spread over the history, so
			// that the block cache does not hold them all.
			i++
			before := firstID + snowflake.ID(n/2+(i*7919)%(n/3))
			t := time.Now()
			cost.begin()
			msgs, _, err := svc.historyPage(context.Background(), conv, &before, historyDefault)
			cost.end()
			lat.time(t)
			if err != nil || len(msgs) != historyDefault {
				b.Fatal(len(msgs), err)
			}
		}
		lat.report(b)
		cost.report(b)
	})
	b.Run("conversations", func(b *testing.B) {
		b.ReportAllocs()
		var lat latencies
		cost := newReadCost(db)
		for b.Loop() {
			t := time.Now()
			cost.begin()
			convs, _, err := svc.conversations(context.Background(), "bob", conversationsDefault)
			cost.end()
			lat.time(t)
			if err != nil || len(convs) != 200 {
				b.Fatal(len(convs), err)
			}
		}
		lat.report(b)
		cost.report(b)
	})
	b.Run("sync1000", func(b *testing.B) {
		// bob's sync index holds a tenth of all positions; start 1,000
		// of his messages before his end (positions are the fill order).
		since := uint64(n - 10*1000 - 10)
		b.ReportAllocs()
		var lat latencies
		cost := newReadCost(db)
		for b.Loop() {
			t := time.Now()
			cost.begin()
			msgs, _, _, err := svc.syncPage(context.Background(), "bob", since, syncMax)
			cost.end()
			lat.time(t)
			if err != nil || len(msgs) != syncMax {
				b.Fatal(len(msgs), err)
			}
		}
		lat.report(b)
		cost.report(b)
	})
}

// pageCacheState sets or reports how much of the store's tables is in
// the kernel's page cache, which decides the cold part of a read (Badger
// reads its tables through mmap): EDGECHAT_BENCH_CACHE=cold drops the
// tables from the page cache before the reads (this store only, not the
// machine's cache), =prewarm reads them in as a node does at start
// (internal/pagecache) and waits for them; unset leaves the cache as it
// is, and the log says what it held.
//
// It runs twice: before Badger opens (cold: a restarted node's Open
// then reads the tables' indexes, with the kernel's readahead around
// them, as it would) and after (prewarm, as the node does once running).
func pageCacheState(b *testing.B, dir string, opened bool) {
	switch mode := os.Getenv("EDGECHAT_BENCH_CACHE"); {
	case mode == "" || mode == "cold" && opened || mode == "prewarm" && !opened:
	case mode == "cold":
		if err := pagecache.Evict(dir, ".sst"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			b.Fatal(err)
		}
		return
	case mode == "prewarm":
		if _, err := pagecache.Prewarm(context.Background(), dir, pagecache.Options{Rate: 1 << 40}); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if cached, total, _ := pagecache.Resident(dir, ".sst"); cached >= total {
				break
			}
		}
	default:
		b.Fatalf("EDGECHAT_BENCH_CACHE=%q: want cold or prewarm", mode)
	}
	cached, total, err := pagecache.Resident(dir, ".sst")
	if err == nil {
		b.Logf("page cache holds %d of the tables' %d MB", cached>>20, total>>20)
	}
}

// fillDirect writes n direct messages with IDs from first and positions
// from 1, with the keys and values applyMessage writes (the summaries
// once at the end, with their final values), or with those it wrote
// before bodies moved into the history keys (oldLayout).
func fillDirect(b *testing.B, db *badger.DB, n int, first snowflake.ID, oldLayout bool) {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	set := func(k, v []byte) {
		if err := wb.Set(k, v); err != nil {
			b.Fatal(err)
		}
	}
	type side struct{ a, b string }
	last := map[side]summary{}
	body := "a message of some sixty bytes, as chat messages often are"
	for i := range n {
		id := first + snowflake.ID(i)
		seq := uint64(i + 1)
		var from, to string
		switch {
		case i%20 == 10:
			from, to = "alice", "bob"
		case i%20 == 0:
			from, to = "bob", "p"+strconv.Itoa((i/20)%199)
		default:
			from, to = "u"+strconv.Itoa(i%10_000), "u"+strconv.Itoa((i*31+7)%10_000)
		}
		if i%40 >= 20 && (from == "bob" || to == "bob") {
			from, to = to, from
		}
		env := text("f"+strconv.Itoa(i), body)
		env.ID, env.From, env.To = id, from, to
		if oldLayout {
			idb := be64(uint64(id))
			set(msgKey(id), env.Marshal())
			set(withID(convPrefix(directConv(from, to)), uint64(id)), []byte(from))
			set(withID(syncPrefix(from), seq), idb)
			if to != from {
				set(withID(syncPrefix(to), seq), idb)
			}
			set(dedupKey(from, env.CID), idb)
		} else {
			kb := newKeyBuf(256)
			set(convKey(directConv(from, to), id), compactBody(&kb, env.Marshal(), id, from, to, ""))
			set(withID(syncPrefix(from), seq), appendLocator(nil, id, to))
			if to != from {
				set(withID(syncPrefix(to), seq), appendLocator(nil, id, from))
			}
			set(dedupKey(from, env.CID), appendLocator(nil, id, to))
		}
		last[side{from, to}] = summary{LastID: id, LastSeq: seq, Kept: true, Unread: last[side{from, to}].Unread}
		s := last[side{to, from}]
		s.LastID, s.LastSeq, s.Kept = id, seq, true
		if to != from {
			s.Unread = min(s.Unread+1, unreadCap)
		}
		last[side{to, from}] = s
	}
	pairs := map[string]pair{}
	for p, s := range last {
		conv := directConv(p.a, p.b)
		x := pairs[conv]
		x.LastID, x.LastSeq = s.LastID, s.LastSeq
		i := sideOf(p.a, p.b)
		x.Unread[i], x.Cursor[i] = s.Unread, s.Cursor
		pairs[conv] = x
		set(summaryKey(p.a, p.b), nil)
	}
	for conv, x := range pairs {
		set(pairKey(conv), x.encode())
	}
	if !oldLayout {
		set(topKey(), be64(uint64(first)+uint64(n)-1))
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	// Compact what the fill left in L0, so that stores filled in either
	// layout are read in the same shape.
	if err := db.Flatten(2); err != nil {
		b.Fatal(err)
	}
}
