package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Point is one (x, y) sample of a series.
type Point struct{ X, Y float64 }

// Series is one named line of a chart.
type Series struct {
	Name   string
	Points []Point
	Color  string // "": from the palette by position
	Dashed bool
}

// Tick is a labelled position on an axis.
type Tick struct {
	Value float64
	Label string
}

// Chart is a line chart. The y axis starts at 0; the x axis spans the
// data unless XTicks are given (then it spans the ticks).
type Chart struct {
	Title  string
	XLabel string
	YLabel string
	XTicks []Tick // nil: chosen automatically
	Series []Series
}

// ErrEmptyChart is returned for a chart without any point.
var ErrEmptyChart = errors.New("chart has no points")

const (
	svgW, svgH             = 800, 480
	padL, padR, padT, padB = 80, 30, 50, 60
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// WriteSVG draws c as a standalone SVG document. It is hand-written
// rather than a plotting dependency: a few lines and labels are all the
// bench tool needs.
func WriteSVG(w io.Writer, c Chart) error {
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymax := 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.X) || math.IsNaN(p.Y) || math.IsInf(p.X, 0) || math.IsInf(p.Y, 0) {
				return fmt.Errorf("series %q: point (%v, %v) is not finite", s.Name, p.X, p.Y)
			}
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			ymax = math.Max(ymax, p.Y)
		}
	}
	if math.IsInf(xmin, 1) {
		return ErrEmptyChart
	}
	xticks := c.XTicks
	if len(xticks) > 0 {
		for _, t := range xticks {
			xmin, xmax = math.Min(xmin, t.Value), math.Max(xmax, t.Value)
		}
	} else {
		xticks = niceTicks(xmin, xmax)
		xmin, xmax = math.Min(xmin, xticks[0].Value), math.Max(xmax, xticks[len(xticks)-1].Value)
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	yticks := niceTicks(0, ymax)
	ytop := math.Max(yticks[len(yticks)-1].Value, ymax)
	if ytop == 0 {
		ytop = 1
	}
	plotW, plotH := float64(svgW-padL-padR), float64(svgH-padT-padB)
	px := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*plotW }
	py := func(y float64) float64 { return padT + plotH - y/ytop*plotH }

	b := bufio.NewWriter(w)
	fmt.Fprintf(b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(b, `<text x="%d" y="28" font-size="16" text-anchor="middle">%s</text>`+"\n", svgW/2, esc(c.Title))
	// Grid and tick labels.
	for _, t := range yticks {
		y := py(t.Value)
		fmt.Fprintf(b, `<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#ddd"/>`+"\n", padL, f(y), svgW-padR, f(y))
		fmt.Fprintf(b, `<text x="%d" y="%s" text-anchor="end">%s</text>`+"\n", padL-6, f(y+4), esc(t.Label))
	}
	for _, t := range xticks {
		x := px(t.Value)
		fmt.Fprintf(b, `<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#ddd"/>`+"\n", f(x), padT, f(x), svgH-padB)
		fmt.Fprintf(b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f(x), svgH-padB+18, esc(t.Label))
	}
	// Axes and their labels.
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", padL, svgH-padB, svgW-padR, svgH-padB)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", padL, padT, padL, svgH-padB)
	fmt.Fprintf(b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f(padL+plotW/2), svgH-15, esc(c.XLabel))
	fmt.Fprintf(b, `<text x="18" y="%s" text-anchor="middle" transform="rotate(-90 18 %s)">%s</text>`+"\n", f(padT+plotH/2), f(padT+plotH/2), esc(c.YLabel))
	// Series.
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		if s.Color != "" {
			color = s.Color
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		pts := make([]string, 0, len(s.Points))
		for _, p := range s.Points {
			pts = append(pts, f(px(p.X))+","+f(py(p.Y)))
		}
		fmt.Fprintf(b, `<g class="series"><title>%s</title>`+"\n", esc(s.Name))
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		if len(s.Points) <= 60 {
			for _, p := range s.Points {
				fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="3" fill="%s"><title>%s</title></circle>`+"\n", f(px(p.X)), f(py(p.Y)), color, esc(fmt.Sprintf("%s: %g, %g", s.Name, p.X, p.Y)))
			}
		}
		fmt.Fprintf(b, "</g>\n")
		// Legend, top left inside the plot.
		ly := padT + 14 + 18*i
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s/>`+"\n", padL+12, ly-4, padL+28, ly-4, color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", padL+32, ly, esc(s.Name))
	}
	fmt.Fprintf(b, "</svg>\n")
	return b.Flush()
}

// niceTicks returns about five round-numbered ticks covering [lo, hi].
func niceTicks(lo, hi float64) []Tick {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	start := math.Floor(lo/step) * step
	var ts []Tick
	for v := start; v <= hi+step*0.999; v += step {
		// Round away float noise (0.30000000000000004) before labelling.
		v = math.Round(v/step) * step
		ts = append(ts, Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 6, 64)})
	}
	return ts
}

func f(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func esc(s string) string {
	var sb strings.Builder
	_ = xml.EscapeText(&sb, []byte(s))
	return sb.String()
}

// ninesX maps a percentile to the x position of an HdrHistogram-style
// chart, where 90, 99 and 99.9 are equally far apart: -log10(1-p/100).
// 100 has no finite position; it is drawn one decade past 99.99.
func ninesX(p float64) float64 {
	if p >= 99.999 {
		return 5
	}
	return -math.Log10(1 - p/100)
}

// ninesTicks label the nines axis.
var ninesTicks = []Tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "max"}}
