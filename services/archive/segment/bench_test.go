package segment

import (
	"bytes"
	"testing"
)

// BenchmarkWrite seals 10,000 chat envelopes per op and reports the
// segment's bytes per message (the sealed tier's disk cost).
func BenchmarkWrite(b *testing.B) {
	msgs := messages(10_000, 1)
	raw := 0
	for _, m := range msgs {
		raw += len(m.Body)
	}
	var size int64
	b.SetBytes(int64(raw))
	for b.Loop() {
		_, meta, err := Write("d:alice:bob", msgs, 0)
		if err != nil {
			b.Fatal(err)
		}
		size = meta.Size
	}
	b.ReportMetric(float64(size)/float64(len(msgs)), "seg-B/msg")
	b.ReportMetric(float64(raw)/float64(len(msgs)), "raw-B/msg")
}

// BenchmarkReadBlock reads and decodes one block (a history page's
// worth) from memory: the CPU of a sealed page on a cache miss, without
// the object store's round trip.
func BenchmarkReadBlock(b *testing.B) {
	msgs := messages(10_000, 1)
	data, _, err := Write("d:alice:bob", msgs, 0)
	if err != nil {
		b.Fatal(err)
	}
	sr, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		b.Fatal(err)
	}
	dec, _ := NewDecoder()
	defer dec.Close()
	i := len(sr.Blocks) / 2
	b.ReportMetric(float64(sr.Blocks[i].Count), "msgs/block")
	for b.Loop() {
		if _, err := sr.ReadBlock(i, dec); err != nil {
			b.Fatal(err)
		}
	}
}
