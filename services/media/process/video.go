package process

import (
	"bytes"
	"context"
	"fmt"
	"image/jpeg"
	"os"
	"os/exec"
	"strings"
)

// ffmpegPath returns the ffmpeg to run, or "" when there is none.
func ffmpegPath(cfg Config) string {
	name := cfg.FFmpeg
	switch name {
	case "none":
		return ""
	case "":
		name = "ffmpeg"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// ProcessVideo makes a preview frame and a copy without container
// metadata (GPS location, device, titles) with ffmpeg, when there is
// one; the streams are copied, not re-encoded. Without ffmpeg the video
// is served as uploaded and the notes say what was skipped. An ffmpeg
// that fails is a note too, not a rejection: the file passed detection
// and the scan, and a codec ffmpeg lacks is no reason to refuse it.
func ProcessVideo(ctx context.Context, cfg Config, path string, d Detection, md Metadata) (out Output, err error) {
	cfg = cfg.withDefaults()
	bin := ffmpegPath(cfg)
	if bin == "" {
		out.Notes = append(out.Notes, "ffmpeg not available: no video preview, metadata boxes blanked")
		return blankedCopy(cfg, path, d, out)
	}
	defer func() {
		if err != nil {
			out.Remove()
			out = Output{}
		}
	}()

	stripped, err := tempName(cfg.TempDir, d.Ext)
	if err != nil {
		return out, fmt.Errorf("video: %w", err)
	}
	if msg := runFFmpeg(ctx, bin, "-i", path, "-map", "0:v?", "-map", "0:a?", "-map_metadata", "-1",
		"-map_chapters", "-1", "-c", "copy", "-movflags", "+faststart", stripped); msg != "" {
		os.Remove(stripped)
		out.Notes = append(out.Notes, "ffmpeg remux failed, metadata boxes blanked: "+msg)
		if out, err = blankedCopy(cfg, path, d, out); err != nil {
			return out, err
		}
	} else {
		out.Output, out.OutputMIME, out.OutputExt = stripped, d.MIME, d.Ext
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}

	prev, err := tempName(cfg.TempDir, ".jpg")
	if err != nil {
		return out, fmt.Errorf("video: %w", err)
	}
	side := fmt.Sprint(cfg.PreviewSide)
	// ffmpeg applies the rotation matrix itself, so the frame is upright.
	if msg := runFFmpeg(ctx, bin, "-i", path, "-frames:v", "1", "-vf",
		"scale=w="+side+":h="+side+":force_original_aspect_ratio=decrease", "-q:v", "4", prev); msg != "" {
		os.Remove(prev)
		out.Notes = append(out.Notes, "ffmpeg preview failed: "+msg)
		return out, nil
	}
	out.Preview, out.PreviewMIME = prev, "image/jpeg"
	b, err := os.ReadFile(prev)
	if err != nil {
		return out, fmt.Errorf("video: %w", err)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		out.Notes = append(out.Notes, "unreadable ffmpeg preview: "+err.Error())
		return out, nil
	}
	out.Placeholder = placeholder(img, cfg.PlaceholderMax)
	if md.Width == 0 { // no tkhd: the preview's aspect is the best we know
		out.Width, out.Height = img.Bounds().Dx(), img.Bounds().Dy()
	}
	return out, nil
}

// runFFmpeg runs ffmpeg quietly and returns "" on success, else the end
// of its error output.
func runFFmpeg(ctx context.Context, bin string, args ...string) string {
	args = append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		return fmt.Sprintf("%v: %s", err, msg)
	}
	return ""
}

// tempName reserves a file name in dir for a tool to write.
func tempName(dir, ext string) (string, error) {
	f, err := os.CreateTemp(dir, "media-*"+ext)
	if err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// blankedCopy serves a copy of the video at path with its metadata
// boxes blanked (blankBMFFMetadata), for when ffmpeg cannot remux it.
func blankedCopy(cfg Config, path string, d Detection, out Output) (Output, error) {
	p, err := blankBMFFMetadata(path, cfg.TempDir, d.Ext)
	if err != nil {
		return out, fmt.Errorf("video: blanking metadata: %w", err)
	}
	out.Output, out.OutputMIME, out.OutputExt = p, d.MIME, d.Ext
	return out, nil
}
