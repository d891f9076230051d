package main

import (
	"errors"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/flightcache/flightcache/bench/internal/plotkit"
)

// Chart size: a README column wide, a line per target.
const chartWidth = 16 * vg.Centimeter

func chartHeight(rows int) vg.Length { return 3*vg.Centimeter + vg.Length(rows)*0.55*vg.Centimeter }

var (
	metColor    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	missedColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	goalColor   = color.Black
	baseColor   = color.Gray{Y: 0x80}
)

// chart draws one horizontal bar per target, first at the top: its ratio
// to the baseline of the same run on a log scale, green when met and red
// when missed, the baseline as a line at 1 and the goal, in the same
// terms, as a tick across the bar. A target without a ratio (not
// measured, or without a baseline) keeps its line, with a note instead of
// a bar.
func chart(rows []row) (*plot.Plot, error) {
	if len(rows) == 0 {
		return nil, errors.New("no targets to draw")
	}
	n := len(rows)
	y := func(i int) float64 { return float64(n - 1 - i) } // first row on top
	metV, missedV := make(plotter.Values, n), make(plotter.Values, n)
	var goals plotter.XYs
	var labelXYs plotter.XYs
	var labels []string
	lowest, highest := math.Inf(1), 0.0
	see := func(v float64) {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			lowest, highest = min(lowest, v), max(highest, v)
		}
	}
	for _, r := range rows {
		see(r.ratio)
		see(r.goalRatio)
	}
	if highest == 0 {
		lowest, highest = 0.1, 10
	}
	axisMin := math.Pow(10, math.Floor(math.Log10(min(lowest, 1)))-0.3)
	axisMax := math.Pow(10, math.Ceil(math.Log10(max(highest, 1))+0.45))

	for i, r := range rows {
		j := n - 1 - i
		if !math.IsNaN(r.goalRatio) {
			goals = append(goals, plotter.XY{X: max(r.goalRatio, axisMin), Y: y(i)})
		}
		text := fmt.Sprintf("%.2f×", r.ratio)
		switch {
		case math.IsNaN(r.ratio):
			text = r.status.String()
			if r.status != notMeasured {
				text += ", no baseline ratio"
			}
		case r.status == met:
			metV[j] = r.ratio
		default:
			missedV[j] = r.ratio
		}
		at := 0.0 // right of the bar and of the goal's tick
		if !math.IsNaN(r.ratio) {
			at = r.ratio
		}
		if !math.IsNaN(r.goalRatio) {
			at = max(at, r.goalRatio)
		}
		labelXYs = append(labelXYs, plotter.XY{X: max(at, axisMin), Y: y(i)})
		labels = append(labels, text)
	}

	p := plot.New()
	p.Title.Text = "Issue 13's targets: flightcache ÷ the baseline of the same run"
	p.X.Label.Text = "ratio to the baseline (log scale); tick: the goal"
	p.X.Scale = plotkit.FloorLog{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())

	width := 0.35 * vg.Centimeter
	for _, b := range []struct {
		v     plotter.Values
		c     color.Color
		label string
	}{{metV, metColor, "met"}, {missedV, missedColor, "missed"}} {
		bars, err := plotter.NewBarChart(b.v, width)
		if err != nil {
			return nil, fmt.Errorf("bar chart: %w", err)
		}
		bars.Horizontal = true
		bars.Color = b.c
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(b.label, bars)
	}

	base, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(n) - 0.5}})
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	base.Color = baseColor
	base.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
	p.Add(base)
	p.Legend.Add("baseline (1×)", base)

	if len(goals) > 0 {
		g, err := plotter.NewScatter(goals)
		if err != nil {
			return nil, fmt.Errorf("goals: %w", err)
		}
		g.GlyphStyle = draw.GlyphStyle{Color: goalColor, Radius: width * 0.65, Shape: tickGlyph{}}
		p.Add(g)
		p.Legend.Add("goal", g)
	}

	l, err := plotter.NewLabels(plotter.XYLabels{XYs: labelXYs, Labels: labels})
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	for i := range l.TextStyle {
		l.TextStyle[i].YAlign = draw.YCenter
		l.TextStyle[i].Font.Size = vg.Points(7)
	}
	l.Offset.X = vg.Points(3)
	p.Add(l)

	names := make([]string, n)
	for i, r := range rows {
		names[n-1-i] = r.label
		if r.ratioOf != "" {
			names[n-1-i] += " ÷ " + r.ratioOf
		}
	}
	p.NominalY(names...)
	p.Y.Tick.Label.Font.Size = vg.Points(8)
	// After every Add, which widens the axes to the data (bars start at 0).
	p.X.Min, p.X.Max = axisMin, axisMax
	p.Y.Min, p.Y.Max = -0.5, float64(n)-0.5
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	return p, nil
}

// tickGlyph draws a goal: a thick vertical line across a bar.
type tickGlyph struct{}

// DrawGlyph implements [draw.GlyphDrawer].
func (tickGlyph) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetLineStyle(draw.LineStyle{Color: sty.Color, Width: vg.Points(2)})
	var path vg.Path
	path.Move(vg.Point{X: pt.X, Y: pt.Y - sty.Radius})
	path.Line(vg.Point{X: pt.X, Y: pt.Y + sty.Radius})
	c.Stroke(path)
}
