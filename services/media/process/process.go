// Package process validates, scans, reads and converts one uploaded file,
// before the media service stores it. It is pure processing: the input
// is a file on disk (the raw upload, already streamed to a temp file by
// the caller), the output is files on disk plus a Result; nothing is
// stored or sent anywhere, except to a clamd daemon when one is
// configured.
//
// Process runs the steps in order, each also exported so the service
// can call or time them one by one (Config.Observe reports each step's
// duration and error):
//
//  1. Detect: the real type from the bytes. The claimed name and
//     Content-Type are hints only: a PNG named "x.jpg" sent as
//     image/jpeg is processed as the PNG it is and the Result says
//     image/png, ".png". Executables and scripts are refused whatever
//     they claim: ELF, PE/MZ, Mach-O, WebAssembly, Java classes and jars
//     (both run code when opened), Android packages, MSI installers,
//     shortcuts, shebang scripts, scripts mimetype recognises, text with
//     Windows script idioms ("@echo off", WScript.Shell, PowerShell
//     downloaders), and names ending in an executable or script
//     extension. Everything else that is not media is an attachment of
//     Kind "file", stored as uploaded; HTML, SVG and XML are served as
//     application/octet-stream so no browser runs their scripts inline.
//  2. CheckBomb: image size from the header (image.DecodeConfig-style
//     readers, a GIF block walker that counts frames without decoding,
//     the HEIC ispe box), refused above MaxPixels per frame, MaxFrames
//     or MaxTotalPixels, and a JPEG's scans counted by walking its
//     markers, refused above MaxScans, before any pixel is decoded.
//  3. Scan: the EICAR test string in the first or last bytes, VBA macros
//     in OOXML (vbaProject.bin) and OLE2 (VBA/Macros storages) office
//     files unless AllowMacros, jars and APKs disguised as plain zips,
//     and ClamAV's clamd over the INSTREAM protocol when ClamdAddr is set.
//  4. ReadMetadata: dimensions, EXIF camera, DateTimeOriginal and
//     orientation, durations from the MP4/MOV mvhd box and the last Ogg
//     page, an estimate for MP3.
//  5. ProcessImage: decode, scale to MaxDimension, apply the EXIF
//     orientation, re-encode from pixels, which drops EXIF, GPS, XMP,
//     ICC profiles and text chunks: JPEG stays JPEG (JPEGQuality), PNG
//     stays lossless PNG, WebP becomes JPEG (lossy, opaque) or PNG
//     (lossless or with alpha) since Go has no WebP encoder, GIF is
//     re-encoded frame for frame with image/gif.EncodeAll (no comment or
//     XMP extensions), but one larger than MaxDimension becomes its
//     first frame, scaled down, as PNG. A preview (PreviewSide, JPEG;
//     PNG when the image has transparency; an animated GIF's first
//     frame) and a tiny placeholder inlined as a data: URI of at most
//     PlaceholderMax bytes.
//  6. ProcessVideo: with ffmpeg on the PATH, a preview frame and a
//     remuxed copy without container metadata (GPS location included);
//     without it (or when the remux fails), a copy whose metadata boxes
//     (udta, meta, XMP uuid) are blanked in place, and the Result notes
//     it.
//
// Rejections are errors wrapping one of the *Rejection sentinels
// (errors.Is); Reason(err) gives their stable machine string.
//
// Limits of this version: HEIC is stored as an unprocessed file unless a
// decoder is plugged in (Config.HEICDecoder), only its Exif and XMP
// items blanked (other metadata in its boxes stays); audio
// keeps its container tags, and without ffmpeg a video its timed
// metadata tracks (a GoPro's GPS stream); ICC profiles are
// dropped without colour conversion (a Display P3 photo looks slightly
// less saturated); archives are not searched beyond their central
// directory; PowerPoint and Excel 4.0 macros in OLE2 files are not
// recognised; a text that merely quotes a script idiom is refused as a
// script; decoding is bounded by MaxPixels but not otherwise by memory:
// a 50 MP 16-bit PNG decodes to 400 MB and a progressive JPEG keeps its
// DCT coefficients (12 bytes a pixel) while decoding; scaling is
// bilinear then 2×2 box halvings, a little softer than a Catmull-Rom
// filter at ratios between 1 and 2.
package process

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"time"
)

// Config tunes processing. The zero value is usable: every zero field
// takes the default documented on it.
type Config struct {
	MaxPixels      int64 // per frame and GIF canvas; default 50,000,000
	MaxFrames      int   // GIF frames; default 1000
	MaxTotalPixels int64 // over all GIF frames; default 100,000,000 (≈100 MB of paletted frames)
	// MaxScans bounds a JPEG's scans; default 500. Encoders write about
	// 10 (libjpeg's progressive script); each scan costs a walk over
	// every block of the image, tens of milliseconds at MaxPixels,
	// whatever few bytes it holds.
	MaxScans       int
	MaxDimension   int // longest side of a served image; default 2560
	PreviewSide    int // longest side of the preview; default 320
	JPEGQuality    int // default 82
	PlaceholderMax int // longest placeholder data: URI in bytes; default 600
	// Accept lists the Kinds this upload may be (an avatar accepts
	// only "image"); empty accepts all.
	Accept      []string
	AllowMacros bool // pass office files with VBA macros
	// ClamdAddr is "tcp:host:port" or "unix:/path/clamd.sock"; empty
	// skips the ClamAV scan.
	ClamdAddr    string
	ClamdTimeout time.Duration // whole conversation; default 30s
	// FFmpeg is the ffmpeg binary: "" looks "ffmpeg" up on the PATH,
	// "none" disables it.
	FFmpeg  string
	TempDir string // where outputs are created; default os.TempDir()
	// HEICDecoder, when set, decodes HEIC/HEIF so it is processed like
	// any image; the standard library and x/image have none.
	HEICDecoder func(io.Reader) (image.Image, error)
	// Observe, when set, is called after each step Process runs.
	Observe func(step Step, took time.Duration, err error)
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def64(&c.MaxPixels, 50_000_000)
	def(&c.MaxFrames, 1000)
	def(&c.MaxScans, 500)
	def64(&c.MaxTotalPixels, 100_000_000)
	def(&c.MaxDimension, 2560)
	def(&c.PreviewSide, 320)
	def(&c.JPEGQuality, 82)
	def(&c.PlaceholderMax, 600)
	if c.JPEGQuality > 100 {
		c.JPEGQuality = 100
	}
	if c.ClamdTimeout <= 0 {
		c.ClamdTimeout = 30 * time.Second
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	return c
}

// Step names a processing step, for metrics.
type Step string

// The steps, in the order Process runs them.
const (
	StepDetect    Step = "detect"
	StepCheckBomb Step = "check_bomb"
	StepScan      Step = "scan"
	StepMetadata  Step = "metadata"
	StepImage     Step = "image"
	StepVideo     Step = "video"
)

// Result describes an accepted upload and what to serve.
type Result struct {
	Kind string // KindImage, KindVideo, KindAudio, KindPDF, KindFile
	MIME string // real type of the upload, from its bytes
	Ext  string // extension fitting MIME (".png" for a PNG named .jpg)
	Size int64  // of the upload
	// Width and Height are those of what is served: upright and bounded
	// by MaxDimension for images, the display size for video.
	Width, Height int
	Duration      time.Duration
	Frames        int    // GIF frames; 1 for other images
	Camera        string // EXIF make and model
	// TakenAt is EXIF DateTimeOriginal, with OffsetTimeOriginal when
	// present; without it the camera's wall clock is given as UTC.
	TakenAt     time.Time
	Placeholder string   // data: URI, "" when there is no picture
	Notes       []string // what was skipped or changed, for logs and support

	// Output is the file to serve: a new file for processed images and
	// remuxed videos, else the input path itself.
	Output, OutputMIME, OutputExt string
	Preview, PreviewMIME          string // "" when there is none
}

// Process runs every step on the upload at path. claimedName and
// claimedType are what the client said; they are only hints. Created
// files are in cfg.TempDir and belong to the caller; on error none is
// left behind.
func Process(ctx context.Context, cfg Config, path, claimedName, claimedType string) (Result, error) {
	cfg = cfg.withDefaults()
	run := func(step Step, f func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		err := f()
		if cfg.Observe != nil {
			cfg.Observe(step, time.Since(start), err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		return nil
	}

	var d Detection
	if err := run(StepDetect, func() (err error) { d, err = Detect(cfg, path, claimedName, claimedType); return }); err != nil {
		return Result{}, err
	}
	var b Bounds
	if err := run(StepCheckBomb, func() (err error) { b, err = CheckBomb(cfg, path, d); return }); err != nil {
		return Result{}, err
	}
	if err := run(StepScan, func() error { return Scan(ctx, cfg, path, d) }); err != nil {
		return Result{}, err
	}
	var md Metadata
	if err := run(StepMetadata, func() (err error) { md, err = ReadMetadata(path, d, b); return }); err != nil {
		return Result{}, err
	}

	res := Result{
		Kind: d.Kind, MIME: d.MIME, Ext: d.Ext, Size: d.Size,
		Width: md.Width, Height: md.Height, Duration: md.Duration, Frames: md.Frames,
		Camera: md.Camera, TakenAt: md.TakenAt,
		Notes:  append(append([]string(nil), d.Notes...), md.Notes...),
		Output: path, OutputMIME: d.MIME, OutputExt: d.Ext,
	}
	if !inlineSafe(d.MIME) {
		res.OutputMIME = "application/octet-stream"
	}
	switch {
	case d.Kind == KindFile && isHEIC(d.MIME):
		// Served as the file it is (no decoder): without its Exif and
		// XMP items (GPS location, camera serial).
		p, err := blankHEIFMetadata(path, cfg.TempDir, d.Ext)
		if err != nil {
			return Result{}, fmt.Errorf("heif metadata: %w", err)
		}
		res.Output = p
		res.Notes = append(res.Notes, "heif exif and xmp items blanked")
	case d.Kind == KindImage:
		var out Output
		if err := run(StepImage, func() (err error) { out, err = ProcessImage(ctx, cfg, path, d, md); return }); err != nil {
			return Result{}, err
		}
		res.apply(out)
	case d.Kind == KindVideo:
		var out Output
		if err := run(StepVideo, func() (err error) { out, err = ProcessVideo(ctx, cfg, path, d, md); return }); err != nil {
			return Result{}, err
		}
		res.apply(out)
	}
	return res, nil
}

func (r *Result) apply(o Output) {
	if o.Output != "" {
		r.Output, r.OutputMIME, r.OutputExt = o.Output, o.OutputMIME, o.OutputExt
	}
	if o.Width > 0 {
		r.Width, r.Height = o.Width, o.Height
	}
	r.Preview, r.PreviewMIME, r.Placeholder = o.Preview, o.PreviewMIME, o.Placeholder
	r.Notes = append(r.Notes, o.Notes...)
}

// Output is what ProcessImage and ProcessVideo made. Empty Output means
// the input is served as it is.
type Output struct {
	Output, OutputMIME, OutputExt string
	Width, Height                 int
	Preview, PreviewMIME          string
	Placeholder                   string
	Notes                         []string
}

// Remove deletes the files o created (not the input). The caller uses
// it when it gives up on an upload after processing.
func (o Output) Remove() error {
	var errs []error
	for _, p := range []string{o.Output, o.Preview} {
		if p != "" {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
