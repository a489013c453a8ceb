package process

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzBMFFBlankSpans: whatever an uploaded video's boxes say, the spans
// blankBMFFMetadata would overwrite lie inside the file, in order, one
// box header long at least, and never overlap; a file that is not boxes
// ends the walk or is refused as corrupt, nothing else.
func FuzzBMFFBlankSpans(f *testing.F) {
	f.Add(mp4File(1000, 5500, 1920, 1080, false))
	f.Add(append(box("moov", box("udta", []byte("©xyz+48.8577+002.2950/"))), box("meta", make([]byte, 12))...))
	f.Add(box("moov", box("trak", box("meta", []byte("serial")))))
	f.Add(append([]byte{0, 0, 0, 1}, "uuid\x00\x00\x00\x00\x00\x00\x00\x18xmpxmpxm"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var spans [][2]int64
		err := findBlanked(bytes.NewReader(data), 0, int64(len(data)), "", 0, &spans)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("findBlanked: %v", err)
		}
		last := int64(0)
		for _, s := range spans {
			if s[0] < last || s[1]-s[0] < 8 || s[1] > int64(len(data)) {
				t.Fatalf("span %v (after %d) outside the file of %d bytes or overlapping: %v", s, last, len(data), spans)
			}
			last = s[1]
		}
	})
}
