package segment

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func messages(n int, seed uint64) []Message {
	rng := rand.New(rand.NewPCG(seed, 1))
	msgs := make([]Message, n)
	id := uint64(380_000_000_000_000_000)
	for i := range msgs {
		id += 1 + uint64(rng.IntN(1<<22))
		body := fmt.Appendf(nil, `{"id":"%d","from":"alice","to":"bob","type":"text","body":"%s"}`, id, words(rng, 20+rng.IntN(180)))
		msgs[i] = Message{ID: id, Body: body}
	}
	return msgs
}

// words is n bytes of random lowercase words: compresses about as well
// as chat text, not better (as node's disk benchmark).
func words(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		if len(b) > 0 && rng.IntN(6) == 0 {
			b = append(b, ' ')
			continue
		}
		b = append(b, byte('a'+rng.IntN(26)))
	}
	return b
}

func readAll(t testing.TB, data []byte) (*Reader, []Message, error) {
	t.Helper()
	sr, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, err
	}
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var all []Message
	for i := range sr.Blocks {
		msgs, err := sr.ReadBlock(i, dec)
		if err != nil {
			return sr, all, err
		}
		all = append(all, msgs...)
	}
	return sr, all, nil
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct{ n, blockBytes int }{{1, 0}, {50, 0}, {1000, 0}, {1000, 512}, {7, 1}} {
		t.Run(fmt.Sprintf("n=%d,block=%d", tc.n, tc.blockBytes), func(t *testing.T) {
			in := messages(tc.n, uint64(tc.n))
			data, meta, err := Write("d:alice:bob", in, tc.blockBytes)
			if err != nil {
				t.Fatal(err)
			}
			if meta.Count != tc.n || meta.FirstID != in[0].ID || meta.LastID != in[tc.n-1].ID || meta.Size != int64(len(data)) {
				t.Fatalf("meta %+v", meta)
			}
			sr, out, err := readAll(t, data)
			if err != nil {
				t.Fatal(err)
			}
			if sr.Conversation != "d:alice:bob" || sr.Count != tc.n || sr.FirstID() != in[0].ID || sr.LastID() != in[tc.n-1].ID {
				t.Fatalf("reader: conv %q count %d", sr.Conversation, sr.Count)
			}
			if len(out) != len(in) {
				t.Fatalf("read %d messages, wrote %d", len(out), len(in))
			}
			for i := range in {
				if out[i].ID != in[i].ID || !bytes.Equal(out[i].Body, in[i].Body) {
					t.Fatalf("message %d differs", i)
				}
			}
			if tc.blockBytes == 1 && len(sr.Blocks) != tc.n {
				t.Fatalf("%d blocks for %d messages with 1-byte blocks", len(sr.Blocks), tc.n)
			}
		})
	}
}

func TestBlockFor(t *testing.T) {
	in := messages(500, 3)
	data, _, err := Write("g:room", in, 1024)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(sr.Blocks) < 10 {
		t.Fatalf("only %d blocks", len(sr.Blocks))
	}
	dec, _ := NewDecoder()
	defer dec.Close()
	for _, m := range []Message{in[0], in[123], in[499]} {
		i := sr.BlockFor(m.ID)
		msgs, err := sr.ReadBlock(i, dec)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, got := range msgs {
			found = found || got.ID == m.ID
		}
		if !found {
			t.Fatalf("id %d not in block %d", m.ID, i)
		}
	}
	if sr.BlockFor(in[0].ID-1) != 0 || sr.BlockFor(in[499].ID+1) != len(sr.Blocks) {
		t.Fatal("BlockFor outside the range")
	}
}

func TestWriteRefusesBadInput(t *testing.T) {
	in := messages(3, 1)
	for name, msgs := range map[string][]Message{
		"none":       nil,
		"descending": {in[1], in[0]},
		"repeated":   {in[0], in[0]},
		"empty body": {{ID: 1, Body: nil}},
		"huge body":  {{ID: 1, Body: make([]byte, MaxBodyBytes+1)}},
	} {
		if _, _, err := Write("d:a:b", msgs, 0); !errors.Is(err, ErrOrder) {
			t.Errorf("%s: err %v, want ErrOrder", name, err)
		}
	}
}

// Every single-byte change of a segment is reported when it is read: no
// damaged object is ever served as messages.
func TestEveryFlippedByteIsDetected(t *testing.T) {
	data, _, err := Write("d:alice:bob", messages(40, 9), 1024)
	if err != nil {
		t.Fatal(err)
	}
	for pos := range data {
		bad := bytes.Clone(data)
		bad[pos] ^= 0x20
		_, _, err := readAll(t, bad)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("byte %d of %d flipped: err %v, want ErrCorrupt", pos, len(data), err)
		}
	}
	for cut := 1; cut < len(data); cut += 7 {
		if _, _, err := readAll(t, data[:len(data)-cut]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated by %d: err %v", cut, err)
		}
	}
}
