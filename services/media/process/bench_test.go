package process

import (
	"context"
	"image"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of Process per size class. Each reports the p50 and p99 of
// one upload's processing time and images/s for one core (Process is
// single-threaded, so that is 1/mean). Run:
//
//	go test -run '^$' -bench . -benchtime 20x ./services/media/process/
func BenchmarkProcess(b *testing.B) {
	classes := []struct {
		name  string
		data  func(testing.TB) []byte
		claim string
	}{
		// A phone photo: 12 MP JPEG, EXIF orientation 6 (portrait), so
		// it is scaled to 2560 and rotated.
		{"photo-12MP-4000x3000-jpeg", func(t testing.TB) []byte { return exifJPEG(t, photo(4000, 3000), 6) }, "IMG.jpg"},
		{"photo-2MP-1632x1224-jpeg", func(t testing.TB) []byte { return exifJPEG(t, photo(1632, 1224), 1) }, "IMG.jpg"},
		{"screenshot-1170x2532-png", func(t testing.TB) []byte { return encodePNG(t, screenshot(1170, 2532)) }, "shot.png"},
	}
	for _, c := range classes {
		path := writeFile(b, "upload", c.data(b))
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := Config{TempDir: dir, FFmpeg: "none"}
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				res, err := Process(context.Background(), cfg, path, c.claim, "")
				times = append(times, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.Remove(res.Output)
				os.Remove(res.Preview)
				b.StartTimer()
			}
			reportLatency(b, times)
		})
	}
}

func reportLatency(b *testing.B, times []time.Duration) {
	slices.Sort(times)
	var sum time.Duration
	for _, t := range times {
		sum += t
	}
	q := func(p float64) time.Duration { return times[min(len(times)-1, int(p*float64(len(times))))] }
	b.ReportMetric(float64(q(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(q(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(times))/sum.Seconds(), "images/s/core")
}

// BenchmarkHeap12MP reports the live heap's high-water mark above the
// idle baseline while processing a 12 MP photo, sampled every 200 µs
// from runtime/metrics in a goroutine.
func BenchmarkHeap12MP(b *testing.B) {
	path := writeFile(b, "upload", exifJPEG(b, photo(4000, 3000), 6))
	cfg := Config{TempDir: b.TempDir(), FFmpeg: "none"}
	var peak uint64
	for i := 0; i < b.N; i++ {
		runtime.GC()
		base := heapLive()
		var high atomic.Uint64
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			t := time.NewTicker(200 * time.Microsecond)
			defer t.Stop()
			for {
				if h := heapLive(); h > high.Load() {
					high.Store(h)
				}
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
		res, err := Process(context.Background(), cfg, path, "IMG.jpg", "")
		close(done)
		<-stopped
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(res.Output)
		os.Remove(res.Preview)
		if h := high.Load(); h > base && h-base > peak {
			peak = h - base
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "heap-peak-MB")
	b.ReportMetric(float64(4000*3000*4)/(1<<20), "rgba-12MP-MB")
}

// heapLive is the bytes of heap objects, live or not yet swept.
func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// screenshot is a UI-like image: flat bars and panels with some text-
// like detail, as phone screenshots are.
func screenshot(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := m.PixOffset(x, y)
			c := byte(245)
			switch {
			case y < 140:
				c = 30
			case (y/90)%2 == 0 && x > 40 && x < w-40:
				c = 225
			}
			if y%90 > 30 && y%90 < 50 && x%14 < 9 && (x/14+y/90)%5 != 0 && y > 140 {
				c = 20 // "text"
			}
			m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = c, c, byte(int(c)*9/10), 255
		}
	}
	return m
}
