package wire

import (
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Hot-path benchmarks (make bench): what every durable publish pays in
// this package — validating the client's envelope, reading its topic,
// and encoding the stamped envelope that is stored and delivered.

var benchPayload = []byte(`{"cid":"c-7f3a","type":"text","body":"hello bob, are we still on for lunch? @carol says hi","replyTo":"7211938138472448001"}`)

func BenchmarkParseEnvelope(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := ParseEnvelope(benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStampEnvelope(b *testing.B) {
	env, err := ParseEnvelope(benchPayload)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e := env
		e.ID, e.From, e.To = snowflake.ID(7211938138472448002), "alice", "bob"
		e.Mentions = MergeMentions(e.Mentions, ScanMentions(e.Body))
		_ = e.Marshal()
	}
}

func BenchmarkParseTopic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if ParseTopic("user/bob/newMessage").Kind != KindDirect {
			b.Fatal("not direct")
		}
	}
}
