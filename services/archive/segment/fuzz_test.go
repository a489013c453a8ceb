package segment

import (
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the reader: it must never panic nor
// allocate without bound, and what it refuses it refuses as ErrCorrupt
// or ErrVersion.
func FuzzOpen(f *testing.F) {
	for _, n := range []int{1, 5, 60} {
		data, _, err := Write("d:alice:bob", messages(n, uint64(n)), 256)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("ECSG\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, msgs, err := readAll(t, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error not ErrCorrupt/ErrVersion: %v", err)
			}
			return
		}
		for i := 1; i < len(msgs); i++ {
			if msgs[i].ID <= msgs[i-1].ID {
				t.Fatal("accepted a segment with IDs out of order")
			}
		}
	})
}
