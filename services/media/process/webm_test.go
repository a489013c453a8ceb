package process

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// ebmlID writes an element ID as it is stored (its marker bits kept).
func ebmlID(id uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	i := 0
	for i < 3 && b[i] == 0 {
		i++
	}
	return b[i:]
}

// ebmlEl is an element with a known size (an 8-byte size field).
func ebmlEl(id uint32, body ...[]byte) []byte {
	data := bytes.Join(body, nil)
	size := make([]byte, 8)
	binary.BigEndian.PutUint64(size, uint64(len(data)))
	size[0] = 0x01
	return append(append(ebmlID(id), size...), data...)
}

// ebmlLive is an element of unknown size, as live recorders write.
func ebmlLive(id uint32, body ...[]byte) []byte {
	return append(append(ebmlID(id), 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), bytes.Join(body, nil)...)
}

func ebmlUint(id uint32, v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return ebmlEl(id, b)
}

// webmFile is a WebM of the given track types (1 video, 2 audio) with a
// 20 ms block every 20 ms for dur, in clusters of one second; live: the
// Segment and Clusters of unknown size and no Duration (MediaRecorder's
// output), else a Duration in Info.
func webmFile(dur time.Duration, live bool, trackTypes ...uint64) []byte {
	header := ebmlEl(ebmlHeader, ebmlEl(0x4286, []byte{1}), ebmlEl(0x4282, []byte("webm")))
	info := [][]byte{ebmlUint(ebmlTimecodeScal, 1_000_000)}
	if !live {
		d := make([]byte, 8)
		binary.BigEndian.PutUint64(d, math.Float64bits(float64(dur/time.Millisecond)))
		info = append(info, ebmlEl(ebmlDuration, d))
	}
	var tracks [][]byte
	for i, tt := range trackTypes {
		codec := "A_OPUS"
		if tt == 1 {
			codec = "V_VP8"
		}
		tracks = append(tracks, ebmlEl(ebmlTrackEntry, ebmlUint(0xD7, uint64(i+1)), ebmlUint(ebmlTrackType, tt), ebmlEl(0x86, []byte(codec))))
	}
	body := [][]byte{ebmlEl(ebmlInfo, info...), ebmlEl(ebmlTracks, tracks...)}
	ms := int(dur / time.Millisecond)
	for start := 0; start < ms; start += 1000 {
		cl := [][]byte{ebmlUint(ebmlTimecode, uint64(start))}
		for t := start; t < min(start+1000, ms); t += 20 {
			block := []byte{0x81, 0, 0, 0x80} // track 1, relative timecode, flags
			binary.BigEndian.PutUint16(block[1:], uint16(t-start))
			cl = append(cl, ebmlEl(ebmlSimpleBlock, append(block, bytes.Repeat([]byte{0xfc}, 40)...)))
		}
		if live {
			body = append(body, ebmlLive(ebmlCluster, cl...))
		} else {
			body = append(body, ebmlEl(ebmlCluster, cl...))
		}
	}
	if live {
		return append(header, ebmlLive(ebmlSegment, body...)...)
	}
	return append(header, ebmlEl(ebmlSegment, body...)...)
}

// A recorded voice note (audio-only WebM) is audio with a duration:
// from Info when it has one, else from the last block's timecode; a WebM
// with video stays a file. Cut short anywhere, the walk neither panics
// nor invents tracks.
func TestWebM(t *testing.T) {
	live := webmFile(2500*time.Millisecond, true, 2)
	for _, tt := range []struct {
		name       string
		data       []byte
		kind, mime string
		dur        time.Duration
	}{
		{"live recording", live, KindAudio, "audio/webm", 2480 * time.Millisecond}, // the last block starts at 2.48 s
		{"with a duration", webmFile(2500*time.Millisecond, false, 2), KindAudio, "audio/webm", 2500 * time.Millisecond},
		{"video", webmFile(time.Second, false, 1, 2), KindFile, "video/webm", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "f", tt.data)
			res, err := Process(t.Context(), Config{TempDir: t.TempDir()}, p, "voice.webm", "audio/webm;codecs=opus")
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != tt.kind || res.MIME != tt.mime || res.Duration != tt.dur {
				t.Fatalf("kind %q mime %q duration %v, want %q %q %v", res.Kind, res.MIME, res.Duration, tt.kind, tt.mime, tt.dur)
			}
			if tt.kind == KindAudio && (res.Ext != ".webm" || res.OutputMIME != "audio/webm" || len(res.Notes) != 0) {
				t.Fatalf("ext %q output %q notes %q", res.Ext, res.OutputMIME, res.Notes)
			}
		})
	}
	for n := range len(live) {
		info, _ := readWebM(bytes.NewReader(live[:n]), int64(n))
		if info.video != 0 || info.audio > 1 {
			t.Fatalf("%d bytes: %+v", n, info)
		}
	}
}
