package backup

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// BenchmarkBackupRestore measures a backup (Write into a directory store)
// and a restore (Verify + load into a new Badger) of a state holding N
// direct messages laid out as the archive stores them: the body under
// c/, two sync locators under s/, a dedup entry (~190 bytes of state per
// message, as measured in the process test's backups). N is
// $EDGECHAT_BACKUP_BENCH_MSGS (default 100,000). Not a test: figures for
// the note.
//
//	EDGECHAT_BACKUP_BENCH_MSGS=1000000 go test -run X -bench BackupRestore -benchtime 1x ./services/backup/
func BenchmarkBackupRestore(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("EDGECHAT_BACKUP_BENCH_MSGS")); err == nil && v > 0 {
		n = v
	}
	s := newTestState(b)
	wb := s.db.NewWriteBatch()
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"hello", "see", "you", "at", "the", "edge", "box", "tonight", "ok", "thanks", "message", "later"}
	for i := range n {
		from, to := fmt.Sprintf("user%03d", rng.IntN(500)), fmt.Sprintf("user%03d", rng.IntN(500))
		id := binary.BigEndian.AppendUint64(nil, uint64(7211938138472448001+i))
		body := fmt.Sprintf(`{"cid":"c-%d","type":"text","body":"%s %s %s %s"}`, i,
			words[rng.IntN(len(words))], words[rng.IntN(len(words))], words[rng.IntN(len(words))], words[rng.IntN(len(words))])
		conv := "d:" + from + ":" + to
		for k, v := range map[string][]byte{
			"r/arch/c/" + conv + "/" + string(id):            []byte(body),
			"r/arch/s/" + from + "/" + string(id):            append(id, to...),
			"r/arch/s/" + to + "/" + string(id):              append(id, from...),
			"r/arch/dedup/" + from + "/c-" + strconv.Itoa(i): id,
		} {
			if err := wb.Set([]byte(k), v); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	s.put("done", "1") // the applied index
	src := Source{State: func(context.Context) (int64, uint64, io.ReadCloser, error) { return s.f.OpenState() }}
	ctx := context.Background()
	for b.Loop() {
		st, _ := NewDirStore(b.TempDir())
		t0 := time.Now()
		m, err := Write(ctx, src, &StoreSink{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		t1 := time.Now()
		o := restoreOpts(b.TempDir())
		o.Log = testutil.QuietLogger()
		if _, err := Restore(ctx, st, m.ID, o); err != nil {
			b.Fatal(err)
		}
		rtook := time.Since(t1)
		b.ReportMetric(float64(m.Bytes())/float64(n), "state-B/msg")
		b.ReportMetric(took.Seconds(), "backup-s")
		b.ReportMetric(rtook.Seconds(), "restore-s")
		b.Logf("%d messages: state %d bytes (%.0f B/msg); backup %v (%.0f msg/s), restore (verify + load) %v (%.0f msg/s)",
			n, m.Bytes(), float64(m.Bytes())/float64(n), took.Round(time.Millisecond), float64(n)/took.Seconds(),
			rtook.Round(time.Millisecond), float64(n)/rtook.Seconds())
	}
}
