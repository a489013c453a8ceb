package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Metadata is what ReadMetadata found. Width and Height are upright
// (EXIF orientation applied) for images.
type Metadata struct {
	Width, Height int
	Duration      time.Duration
	Frames        int
	Camera        string
	TakenAt       time.Time
	Orientation   int // EXIF 1..8; 0 when absent
	HasGPS        bool
	Notes         []string
}

// tailSize is how much of the end of a file the Ogg reader and the
// EICAR check look at.
const tailSize = 64 << 10

// ReadMetadata reads dimensions, duration and EXIF without decoding
// pixels. b is CheckBomb's result (image sizes are not read twice). A
// broken EXIF block is a note, not an error: the image itself may be
// fine, and its EXIF is dropped anyway.
func ReadMetadata(path string, d Detection, b Bounds) (Metadata, error) {
	md := Metadata{Width: b.Width, Height: b.Height, Frames: b.Frames}
	f, err := os.Open(path)
	if err != nil {
		return md, fmt.Errorf("metadata: %w", err)
	}
	defer f.Close()
	switch {
	case d.Kind == KindImage:
		raw, err := findExif(f, d.MIME)
		if err != nil {
			return md, err
		}
		if raw != nil {
			info, err := parseExif(raw)
			if err != nil {
				md.Notes = append(md.Notes, "unreadable EXIF: "+err.Error())
			}
			md.Camera = camera(info.Make, info.Model)
			md.TakenAt, md.Orientation, md.HasGPS = info.TakenAt, info.Orientation, info.HasGPS
			if info.HasGPS {
				md.Notes = append(md.Notes, "GPS location removed")
			}
		}
		if md.Orientation >= 5 {
			md.Width, md.Height = md.Height, md.Width
		}
	case d.Kind == KindVideo || d.MIME == "audio/x-m4a" || d.MIME == "audio/mp4" || isHEIC(d.MIME):
		info, err := readBMFF(f, d.Size)
		if err != nil {
			if isHEIC(d.MIME) && d.Kind == KindFile {
				md.Notes = append(md.Notes, "unreadable HEIC boxes: "+err.Error())
				return md, nil
			}
			return md, err
		}
		md.Duration = info.duration
		if d.Kind != KindAudio {
			md.Width, md.Height = info.width, info.height
		}
	case d.MIME == "audio/ogg":
		head, tail, err := headTail(f, d.Size, 512, tailSize)
		if err != nil {
			return md, fmt.Errorf("metadata: %w", err)
		}
		md.Duration = oggDuration(head, tail)
	case d.MIME == "audio/webm":
		info, err := readWebM(f, d.Size)
		if err != nil {
			md.Notes = append(md.Notes, "unreadable WebM: "+err.Error())
			return md, nil
		}
		md.Duration = info.duration
	case d.MIME == "audio/mpeg":
		head, _, err := headTail(f, d.Size, 16<<10, 0)
		if err != nil {
			return md, fmt.Errorf("metadata: %w", err)
		}
		if md.Duration = mp3Duration(head, d.Size); md.Duration > 0 {
			md.Notes = append(md.Notes, "mp3 duration estimated from the first frame")
		}
	}
	return md, nil
}

// camera joins make and model, without repeating a make the model
// already starts with ("Canon" + "Canon EOS R5").
func camera(mk, model string) string {
	if mk != "" && strings.HasPrefix(strings.ToLower(model), strings.ToLower(mk)) {
		return model
	}
	return strings.TrimSpace(mk + " " + model)
}

// headTail reads up to nh bytes from the start of f and nt from its end.
func headTail(f io.ReaderAt, size int64, nh, nt int) (head, tail []byte, err error) {
	read := func(off int64, n int) ([]byte, error) {
		if off < 0 {
			n, off = n+int(off), 0
		}
		n = int(min(int64(n), size-off))
		if n <= 0 {
			return nil, nil
		}
		b := make([]byte, n)
		k, err := f.ReadAt(b, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return b[:k], nil
	}
	if head, err = read(0, nh); err != nil {
		return nil, nil, err
	}
	tail, err = read(size-int64(nt), nt)
	return head, tail, err
}

// mp3Duration estimates an MP3's duration from its first frame: the
// frame count of a Xing/Info header when there is one (VBR files), else
// the bit rate as constant. 0 when it cannot tell.
func mp3Duration(head []byte, size int64) time.Duration {
	off := 0
	if len(head) >= 10 && string(head[:3]) == "ID3" {
		off = 10 + (int(head[6]&0x7f)<<21 | int(head[7]&0x7f)<<14 | int(head[8]&0x7f)<<7 | int(head[9]&0x7f))
	}
	for ; off+4 <= len(head); off++ {
		if head[off] != 0xff || head[off+1]&0xe0 != 0xe0 {
			continue
		}
		h := binary.BigEndian.Uint32(head[off:])
		version, layer := h>>19&3, h>>17&3
		bi, ri := h>>12&15, h>>10&3
		if version == 1 || layer != 1 || bi == 0 || bi == 15 || ri == 3 {
			continue // reserved, not layer III, free or bad bit rate
		}
		rates := [4][3]uint64{3: {44100, 48000, 32000}, 2: {22050, 24000, 16000}, 0: {11025, 12000, 8000}}
		v1 := [16]uint64{0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320}
		v2 := [16]uint64{0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160}
		rate, kbps, samples := rates[version][ri], v2[bi], uint64(576)
		if version == 3 {
			kbps, samples = v1[bi], 1152
		}
		// Xing/Info sits after the side information.
		side := 17
		switch {
		case version == 3 && h>>6&3 != 3:
			side = 32
		case version != 3 && h>>6&3 == 3:
			side = 9
		}
		x := off + 4 + side
		if x+12 <= len(head) && (string(head[x:x+4]) == "Xing" || string(head[x:x+4]) == "Info") &&
			head[x+7]&1 != 0 {
			frames := uint64(binary.BigEndian.Uint32(head[x+8:]))
			return ticks(frames*samples, rate)
		}
		audio := size - int64(off)
		if audio <= 0 {
			return 0
		}
		return ticks(uint64(audio)*8, kbps*1000)
	}
	return 0
}
