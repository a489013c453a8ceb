package auth

import (
	"fmt"
	"testing"
	"time"
)

// The ended-session set stays bounded by what is recent: sessions end
// steadily, a minute's worth (600) live at a time; the set never holds
// much more than twice that, and an old entry goes.
func TestEndedSessionsStayBoundedByTheRecentOnes(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEndedSessions(time.Minute)
	for i := range 10000 {
		now = now.Add(100 * time.Millisecond)
		e.put(fmt.Sprint("s-", i), now, now)
		if n := len(e.m); n > 2*(600+endedSweepMin) {
			t.Fatalf("after %d puts the set holds %d", i+1, n)
		}
	}
	if _, ok := e.get("s-1"); ok {
		t.Fatal("an entry older than keep was kept")
	}
	if _, ok := e.get("s-9999"); !ok {
		t.Fatal("a recent entry was dropped")
	}
}

// BenchmarkEndedSessionPut: a session ends (on every node, after the
// commit, holding the lock every token check reads under) while 20,000
// others ended within the access token lifetime (a suspension wave, a
// busy quarter hour): each put walked every entry once the set held
// more than 1,024.
func BenchmarkEndedSessionPut(b *testing.B) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEndedSessions(15 * time.Minute)
	for i := range 20000 {
		e.put(fmt.Sprint("live-", i), now, now)
	}
	b.ResetTimer()
	for i := range b.N {
		e.put(fmt.Sprint("s-", i), now, now)
	}
}
