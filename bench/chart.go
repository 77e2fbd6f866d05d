package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	ink       = color.RGBA{40, 40, 40, 255}
	gridColor = color.RGBA{225, 225, 225, 255}
	// One colour per tool, haul first.
	toolColors = []color.RGBA{
		{214, 39, 40, 255},   // haul: red
		{31, 119, 180, 255},  // rsync: blue
		{120, 170, 220, 255}, // rsync -z: light blue
		{44, 160, 44, 255},   // restic: green
		{255, 127, 14, 255},  // borg: orange
		{148, 103, 189, 255},
	}
)

// shortBytes labels a bar: 512B, 37K, 3.9M (binary units).
func shortBytes(n int64) string {
	f := float64(n)
	switch {
	case f >= 10<<30:
		return fmt.Sprintf("%.0fG", f/(1<<30))
	case f >= 1<<30:
		return fmt.Sprintf("%.1fG", f/(1<<30))
	case f >= 10<<20:
		return fmt.Sprintf("%.0fM", f/(1<<20))
	case f >= 1<<20:
		return fmt.Sprintf("%.1fM", f/(1<<20))
	case f >= 1<<10:
		return fmt.Sprintf("%.0fK", f/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func shortSec(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f", s)
	case s >= 10:
		return fmt.Sprintf("%.1f", s)
	}
	return fmt.Sprintf("%.2f", s)
}

func fillRect(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), &image.Uniform{c}, image.Point{}, draw.Src)
}

// panel is one bar chart: a value per (step, tool), drawn as grouped bars.
type panel struct {
	title string
	value func(Result) float64
	label func(Result) string
	log   bool
}

// WriteChart draws the peers report as a PNG: bytes on the wire (log scale)
// and wall time per step, one bar per tool.
func WriteChart(w io.Writer, rep *Report) error {
	const width, height = 1100, 820
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fillRect(img, 0, 0, width, height, white)
	title := fmt.Sprintf("haul, rsync, restic, borg on a %s Pangolin-like tree", SizeName(rep.Options.Size))
	if !rep.Link.Loopback() {
		title += ", " + rep.Link.String()
	}
	drawText(img, (width-textWidth(title, 2))/2, 12, title, 2, ink)

	// Legend.
	x := 60
	for i, t := range rep.Tools {
		fillRect(img, x, 44, x+14, 58, toolColors[i%len(toolColors)])
		drawText(img, x+20, 47, t.Name, 1, ink)
		x += 20 + textWidth(t.Name, 1) + 30
	}

	panels := []panel{
		{title: "bytes on the wire (log scale, K=KiB M=MiB)", log: true,
			value: func(r Result) float64 { return float64(r.Wire()) },
			label: func(r Result) string { return shortBytes(r.Wire()) }},
		{title: "wall time, seconds",
			value: func(r Result) float64 { return r.Wall.Seconds() },
			label: func(r Result) string { return shortSec(r.Wall.Seconds()) }},
	}
	top := 72
	ph := (height - top - 10) / len(panels)
	for _, p := range panels {
		drawPanel(img, rep, p, image.Rect(0, top, width, top+ph))
		top += ph
	}
	return png.Encode(w, img)
}

func drawPanel(img *image.RGBA, rep *Report, p panel, area image.Rectangle) {
	left, right := area.Min.X+70, area.Max.X-20
	ytop, ybot := area.Min.Y+28, area.Max.Y-34
	drawText(img, left, area.Min.Y+6, p.title, 2, ink)

	var maxV, minV float64 = 0, math.Inf(1)
	for _, r := range rep.Results {
		if v := p.value(r); v > 0 {
			maxV = max(maxV, v)
			minV = min(minV, v)
		}
	}
	if maxV == 0 {
		return
	}
	// The axis: decades of KiB/MiB for bytes, a rounded maximum for time.
	var ticks []float64
	var tickLabel func(float64) string
	var lo, hi float64
	if p.log {
		// 1K 10K 100K 1M 10M 100M 1G…: decades in binary units, so
		// the labels stay round (1M is 10.24 × 100K).
		var decades []float64
		for _, unit := range []float64{1 << 10, 1 << 20, 1 << 30} {
			decades = append(decades, unit, 10*unit, 100*unit)
		}
		for i, v := range decades {
			next := math.Inf(1)
			if i+1 < len(decades) {
				next = decades[i+1]
			}
			if next > minV || v >= maxV {
				ticks = append(ticks, v)
			}
			if v >= maxV {
				break
			}
		}
		lo, hi = math.Log10(ticks[0]), math.Log10(ticks[len(ticks)-1])
		tickLabel = func(v float64) string { return shortBytes(int64(v)) }
	} else {
		step := niceStep(maxV / 5)
		for v := 0.0; ; v += step {
			ticks = append(ticks, v)
			if v >= maxV {
				break
			}
		}
		lo, hi = 0, ticks[len(ticks)-1]
		tickLabel = func(v float64) string { return shortSec(v) }
	}
	ypos := func(v float64) int {
		if p.log {
			if v <= 0 {
				return ybot
			}
			v = math.Log10(v)
		}
		f := (v - lo) / (hi - lo)
		f = max(0, min(1, f))
		return ybot - int(f*float64(ybot-ytop))
	}
	for _, t := range ticks {
		y := ypos(t)
		fillRect(img, left, y, right, y+1, gridColor)
		l := tickLabel(t)
		drawText(img, left-8-textWidth(l, 1), y-3, l, 1, ink)
	}
	fillRect(img, left, ytop, left+1, ybot+1, ink)
	fillRect(img, left, ybot, right, ybot+1, ink)

	nSteps, nTools := len(rep.Steps), len(rep.Tools)
	groupW := (right - left) / nSteps
	barW := min(40, (groupW-24)/nTools)
	for si, s := range rep.Steps {
		gx := left + si*groupW + (groupW-barW*nTools)/2
		for ti, t := range rep.Tools {
			r, ok := rep.Get(t.Name, s.Name)
			if !ok {
				continue
			}
			x0 := gx + ti*barW
			y := ypos(p.value(r))
			if y >= ybot {
				y = ybot - 1
			}
			fillRect(img, x0+2, y, x0+barW-2, ybot, toolColors[ti%len(toolColors)])
			l := p.label(r)
			lx := x0 + (barW-textWidth(l, 1))/2
			drawText(img, lx, y-10, l, 1, ink)
		}
		drawText(img, left+si*groupW+(groupW-textWidth(s.Label, 1))/2, ybot+10, s.Label, 1, ink)
	}
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	exp := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*exp {
			return m * exp
		}
	}
	return 10 * exp
}
