package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// ProcessImage decodes the image at path, scales it to MaxDimension,
// turns it upright per md.Orientation and re-encodes it from pixels, so
// nothing of the upload's metadata (EXIF, GPS, XMP, ICC, PNG text
// chunks, comments) reaches what is served. It also writes a preview
// and returns a placeholder.
//
// Memory: the decoded image, the scaled copy and the oriented copy are
// alive at once, and scaling comes first so the two copies are at most
// MaxDimension² pixels: a 12 MP JPEG costs its YCbCr decode (18 MB) and
// two 2560×1920 RGBA images (20 MB each). The upload is read through a
// buffer, never whole.
func ProcessImage(ctx context.Context, cfg Config, path string, d Detection, md Metadata) (out Output, err error) {
	cfg = cfg.withDefaults()
	defer func() {
		if err != nil {
			out.Remove()
			out = Output{}
		}
	}()
	f, err := os.Open(path)
	if err != nil {
		return out, fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)

	if d.MIME == "image/gif" {
		g, err := gif.DecodeAll(r)
		if err != nil {
			return out, fmt.Errorf("%w: gif: %v", ErrCorrupt, err)
		}
		f.Close()
		return processGIF(ctx, cfg, g, out)
	}

	var img image.Image
	switch {
	case d.MIME == "image/jpeg":
		img, err = jpeg.Decode(r)
	case d.MIME == "image/png" || d.MIME == "image/apng":
		img, err = png.Decode(r)
	case d.MIME == "image/webp":
		img, err = webp.Decode(r)
	case isHEIC(d.MIME) && cfg.HEICDecoder != nil:
		img, err = cfg.HEICDecoder(r)
	default:
		return out, fmt.Errorf("%w: no image decoder for %s", ErrTypeNotAllowed, d.MIME)
	}
	if err != nil {
		return out, fmt.Errorf("%w: %s: %v", ErrCorrupt, d.MIME, err)
	}
	f.Close()
	// The header was checked, but a plugged-in decoder was not.
	if b := img.Bounds(); int64(b.Dx())*int64(b.Dy()) > cfg.MaxPixels {
		return out, fmt.Errorf("%w: decoded %v", ErrTooManyPixels, b.Size())
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}

	// What to encode as: JPEG stays JPEG; PNG stays PNG; WebP and HEIC
	// become JPEG when they decode to opaque YCbCr (lossy, no alpha),
	// PNG otherwise (lossless or transparent), as Go encodes no WebP.
	_, ycc := img.(*image.YCbCr)
	asJPEG := d.MIME == "image/jpeg" || (d.MIME != "image/png" && d.MIME != "image/apng" && ycc)
	if d.MIME == "image/webp" || isHEIC(d.MIME) {
		as := "PNG"
		if asJPEG {
			as = "JPEG"
		}
		out.Notes = append(out.Notes, d.MIME+" re-encoded as "+as)
	}

	img = scaleToFit(img, cfg.MaxDimension)
	if md.Orientation > 1 {
		img = orient(toRGBA(img), md.Orientation)
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}

	b := img.Bounds()
	out.Width, out.Height = b.Dx(), b.Dy()
	if asJPEG {
		out.Output, err = writeTemp(cfg.TempDir, ".jpg", func(w *bufio.Writer) error {
			return jpeg.Encode(w, img, &jpeg.Options{Quality: cfg.JPEGQuality})
		})
		out.OutputMIME, out.OutputExt = "image/jpeg", ".jpg"
	} else {
		out.Output, err = writeTemp(cfg.TempDir, ".png", func(w *bufio.Writer) error {
			return (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(w, img)
		})
		out.OutputMIME, out.OutputExt = "image/png", ".png"
	}
	if err != nil {
		return out, fmt.Errorf("image: encode: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, previewAndPlaceholder(cfg, img, &out)
}

// processGIF re-encodes every frame with image/gif, which writes no
// comment, XMP or other application extension but the looping one, and
// previews the first frame as PNG (GIFs are often transparent). A GIF
// larger than MaxDimension is served as its first frame, scaled down
// like any picture, as PNG.
func processGIF(ctx context.Context, cfg Config, g *gif.GIF, out Output) (Output, error) {
	if len(g.Image) == 0 {
		return out, fmt.Errorf("%w: gif without frames", ErrCorrupt)
	}
	// The first frame, drawn on the logical screen as a viewer would.
	canvas := image.NewRGBA(image.Rect(0, 0, g.Config.Width, g.Config.Height))
	draw.Draw(canvas, g.Image[0].Bounds(), g.Image[0], g.Image[0].Bounds().Min, draw.Over)
	var err error
	if max(g.Config.Width, g.Config.Height) > cfg.MaxDimension {
		// Scaling an animation means re-compositing every frame with its
		// disposal. Served at its size, it made every recipient's app
		// decode a canvas of up to MaxPixels a frame, whatever few bytes
		// its frames hold.
		img := scaleToFit(canvas, cfg.MaxDimension)
		out.Output, err = writeTemp(cfg.TempDir, ".png", func(w *bufio.Writer) error {
			return (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(w, img)
		})
		if err != nil {
			return out, fmt.Errorf("image: encode: %w", err)
		}
		out.OutputMIME, out.OutputExt = "image/png", ".png"
		b := img.Bounds()
		out.Width, out.Height = b.Dx(), b.Dy()
		out.Notes = append(out.Notes, "gif larger than MaxDimension served as its first frame, scaled down")
		if err := ctx.Err(); err != nil {
			return out, err
		}
		return out, previewAndPlaceholder(cfg, img, &out)
	}
	out.Output, err = writeTemp(cfg.TempDir, ".gif", func(w *bufio.Writer) error {
		// Comments and XMP in the input are dropped by the decoder;
		// only the frames, delays, disposals and loop count survive.
		return gif.EncodeAll(w, &gif.GIF{Image: g.Image, Delay: g.Delay, Disposal: g.Disposal,
			LoopCount: g.LoopCount, Config: g.Config, BackgroundIndex: g.BackgroundIndex})
	})
	if err != nil {
		return out, fmt.Errorf("image: gif encode: %w", err)
	}
	out.OutputMIME, out.OutputExt = "image/gif", ".gif"
	out.Width, out.Height = g.Config.Width, g.Config.Height
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, previewAndPlaceholder(cfg, canvas, &out)
}

// previewAndPlaceholder writes the preview of img (already upright) and
// fills out.Placeholder.
func previewAndPlaceholder(cfg Config, img image.Image, out *Output) error {
	prev := scaleToFit(img, cfg.PreviewSide)
	var err error
	if opaque(prev) {
		out.Preview, err = writeTemp(cfg.TempDir, ".jpg", func(w *bufio.Writer) error {
			return jpeg.Encode(w, prev, &jpeg.Options{Quality: cfg.JPEGQuality})
		})
		out.PreviewMIME = "image/jpeg"
	} else {
		out.Preview, err = writeTemp(cfg.TempDir, ".png", func(w *bufio.Writer) error {
			return (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(w, prev)
		})
		out.PreviewMIME = "image/png"
	}
	if err != nil {
		return fmt.Errorf("image: preview: %w", err)
	}
	out.Placeholder = placeholder(prev, cfg.PlaceholderMax)
	return nil
}

// placeholder is a tiny blurred PNG of img as a data: URI of at most
// maxLen bytes: clients show it, stretched and blurred, while the
// preview loads. A JPEG would be smaller in pixels but its fixed tables
// alone are over 600 bytes; a 16-24 px PNG of blurred pixels compresses to
// a few hundred. Sizes shrink until the URI fits; "" if none does.
func placeholder(img image.Image, maxLen int) string {
	for _, side := range []int{24, 20, 16, 12, 8, 4} {
		small := toRGBA(scaleToFit(img, side))
		blur(small)
		// Dropping the low bits of each channel costs nothing visible
		// in a blurred 16 px image and lets deflate find repeats.
		for i := range small.Pix {
			small.Pix[i] &^= 7
			if i%4 == 3 && small.Pix[i] == 0xf8 {
				small.Pix[i] = 0xff
			}
		}
		var buf bytes.Buffer
		buf.WriteString("data:image/png;base64,")
		var raw bytes.Buffer
		if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&raw, small); err != nil {
			return ""
		}
		enc := base64.NewEncoder(base64.StdEncoding, &buf)
		enc.Write(raw.Bytes())
		enc.Close()
		if buf.Len() <= maxLen {
			return buf.String()
		}
	}
	return ""
}

// blur is one pass of a 3×3 box blur over m in place (through a copy).
func blur(m *image.RGBA) {
	b := m.Bounds()
	src := append([]byte(nil), m.Pix...)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var sum [4]int
			n := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					p := image.Pt(x+dx, y+dy)
					if !p.In(b) {
						continue
					}
					i := m.PixOffset(p.X, p.Y)
					for c := 0; c < 4; c++ {
						sum[c] += int(src[i+c])
					}
					n++
				}
			}
			i := m.PixOffset(x, y)
			for c := 0; c < 4; c++ {
				m.Pix[i+c] = uint8(sum[c] / n)
			}
		}
	}
}

// fit returns w×h scaled so its longest side is at most side, keeping
// the aspect ratio and at least one pixel per side.
func fit(w, h, side int) (int, int) {
	if w <= side && h <= side {
		return w, h
	}
	if w >= h {
		return side, max(1, int((int64(h)*int64(side)+int64(w)/2)/int64(w)))
	}
	return max(1, int((int64(w)*int64(side)+int64(h)/2)/int64(h))), side
}

// scaleToFit returns img itself when it fits in side, else a scaled
// RGBA copy.
//
// Not x/image/draw's CatmullRom: its separable pass keeps a float64
// RGBA buffer of destination width × source height, 245 MB for a
// 4000×3000 photo scaled to 2560. Instead, mipmap-style: bilinear
// (draw.ApproxBiLinear, no temporary buffer) to the smallest
// power-of-two multiple of the target size that the source covers,
// where the ratio is below 2 and bilinear does not skip pixels much,
// then exact 2×2 box halvings down to the target, which average every
// pixel. Peak memory is the source plus that intermediate.
func scaleToFit(img image.Image, side int) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	w, h := fit(sw, sh, side)
	if w == sw && h == sh {
		return img
	}
	k := 0
	for k < 16 && w<<(k+1) <= sw && h<<(k+1) <= sh {
		k++
	}
	var m *image.RGBA
	if iw, ih := w<<k, h<<k; iw == sw && ih == sh {
		m = toRGBA(img)
	} else {
		m = image.NewRGBA(image.Rect(0, 0, iw, ih))
		draw.ApproxBiLinear.Scale(m, m.Bounds(), img, b, draw.Src, nil)
	}
	for ; k > 0; k-- {
		m = halve(m)
	}
	return m
}

// halve is m at half its size (even dimensions), each pixel the mean of
// a 2×2 block.
func halve(m *image.RGBA) *image.RGBA {
	w, h := m.Rect.Dx()/2, m.Rect.Dy()/2
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		r0 := m.Pix[(2*y)*m.Stride:]
		r1 := m.Pix[(2*y+1)*m.Stride:]
		o := out.Pix[y*out.Stride : y*out.Stride+4*w]
		for x := 0; x < 4*w; x += 4 {
			for c := 0; c < 4; c++ {
				i := 2*x + c
				o[x+c] = uint8((uint(r0[i]) + uint(r0[i+4]) + uint(r1[i]) + uint(r1[i+4]) + 2) >> 2)
			}
		}
	}
	return out
}

// toRGBA returns img as *image.RGBA at the origin, converting when it is
// not one already.
func toRGBA(img image.Image) *image.RGBA {
	if m, ok := img.(*image.RGBA); ok && m.Rect.Min == (image.Point{}) {
		return m
	}
	b := img.Bounds()
	m := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(m, m.Bounds(), img, b.Min, draw.Src)
	return m
}

// orient returns src turned upright per the EXIF orientation o (1-8,
// TIFF 6.0 tag 274): o is how the stored rows map to the scene, so 6
// means the camera was turned 90° clockwise and the stored image must
// be rotated 90° clockwise to display.
func orient(src *image.RGBA, o int) *image.RGBA {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	// sx, sy: the source pixel shown at (x, y) of the result.
	var at func(x, y int) (int, int)
	switch o {
	case 2:
		at = func(x, y int) (int, int) { return w - 1 - x, y }
	case 3:
		at = func(x, y int) (int, int) { return w - 1 - x, h - 1 - y }
	case 4:
		at = func(x, y int) (int, int) { return x, h - 1 - y }
	case 5:
		at = func(x, y int) (int, int) { return y, x }
	case 6:
		at = func(x, y int) (int, int) { return y, h - 1 - x }
	case 7:
		at = func(x, y int) (int, int) { return w - 1 - y, h - 1 - x }
	case 8:
		at = func(x, y int) (int, int) { return w - 1 - y, x }
	default:
		return src
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+4*dw]
		for x := 0; x < dw; x++ {
			sx, sy := at(x, y)
			i := sy*src.Stride + 4*sx
			copy(row[4*x:4*x+4], src.Pix[i:i+4])
		}
	}
	return dst
}

// opaque reports whether img has no transparent pixel.
func opaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if _, _, _, a := img.At(x, y).RGBA(); a != 0xffff {
				return false
			}
		}
	}
	return true
}

// writeTemp creates a file in dir, lets write fill it through a buffer
// and returns its path; on error the file is removed.
func writeTemp(dir, ext string, write func(*bufio.Writer) error) (string, error) {
	f, err := os.CreateTemp(dir, "media-*"+ext)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
