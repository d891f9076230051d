package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/flightcache/flightcache/bench/internal/plotkit"
	"github.com/flightcache/flightcache/bench/internal/report"
)

// Chart size: fits a README column.
const (
	chartWidth  = 16 * vg.Centimeter
	chartHeight = 9 * vg.Centimeter
)

// largestHerd returns the cells of the largest P×N in rep (the more
// clients on a tie), one per strategy in run order.
func largestHerd(rep *report.Stampede) []report.Cell {
	var best report.Cell
	for _, c := range rep.Cells {
		size, bestSize := c.Processes*c.Clients, best.Processes*best.Clients
		if size > bestSize || size == bestSize && c.Clients > best.Clients {
			best = c
		}
	}
	var cells []report.Cell
	for _, c := range rep.Cells {
		if c.Processes == best.Processes && c.Clients == best.Clients {
			cells = append(cells, c)
		}
	}
	slices.SortStableFunc(cells, func(a, b report.Cell) int {
		return order(rep.Strategies, a.Strategy) - order(rep.Strategies, b.Strategy)
	})
	return cells
}

// order is name's position in names, names missing from it last.
func order(names []string, name string) int {
	if i := slices.Index(names, name); i >= 0 {
		return i
	}
	return len(names)
}

// originCallsChart draws the origin calls of each strategy on a log scale.
func originCallsChart(cells []report.Cell) (*plot.Plot, error) {
	values := make(plotter.Values, len(cells))
	labels := make([]string, len(cells))
	for i, c := range cells {
		values[i] = float64(c.OriginCalls)
		labels[i] = strconv.FormatInt(c.OriginCalls, 10)
	}
	p, err := strategyBars(cells, values, labels)
	if err != nil {
		return nil, err
	}
	p.Title.Text = fmt.Sprintf("Origin calls for one cold key: %s", herdName(cells[0]))
	p.Y.Label.Text = "origin calls (log scale)"
	p.Y.Scale = plotkit.FloorLog{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = 0.7
	p.Y.Max = math.Max(10, p.Y.Max*3) // room for the labels
	return p, nil
}

// extraWaitChart draws the p99 extra wait of each strategy.
func extraWaitChart(cells []report.Cell) (*plot.Plot, error) {
	values := make(plotter.Values, len(cells))
	labels := make([]string, len(cells))
	for i, c := range cells {
		values[i] = c.ExtraWaitP99MS
		labels[i] = fmt.Sprintf("%.0f ms", c.ExtraWaitP99MS)
	}
	p, err := strategyBars(cells, values, labels)
	if err != nil {
		return nil, err
	}
	p.Title.Text = fmt.Sprintf("p99 wait beyond the origin's own time: %s", herdName(cells[0]))
	p.Y.Label.Text = "p99 extra wait (ms)"
	p.Y.Tick.Marker = roundTicks
	p.Y.Min = 0
	p.Y.Max = math.Max(1, p.Y.Max*1.15)
	return p, nil
}

func herdName(c report.Cell) string {
	return fmt.Sprintf("%d processes × %d clients", c.Processes, c.Clients)
}

// strategyBars draws one labelled bar per strategy.
func strategyBars(cells []report.Cell, values plotter.Values, labels []string) (*plot.Plot, error) {
	p := plot.New()
	bars, err := plotter.NewBarChart(values, vg.Centimeter)
	if err != nil {
		return nil, fmt.Errorf("bar chart: %w", err)
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars, plotter.NewGrid())
	names := make([]string, len(cells))
	xys := make(plotter.XYs, len(cells))
	for i, c := range cells {
		names[i] = c.Strategy
		xys[i] = plotter.XY{X: float64(i), Y: values[i]}
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return nil, fmt.Errorf("bar labels: %w", err)
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = -0.5 // centred on the bar, just above it
		l.Offset.Y = 2
	}
	p.Add(l)
	return p, nil
}

// hitCostChart draws the median ns/op of each case, grouped by adapter,
// on a log scale: a bare handler costs a microsecond, a Redis round trip
// tens of them.
func hitCostChart(h *hitCost) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Cost of a cache hit, per adapter (median ns/op)"
	p.Y.Label.Text = "time per request (log scale)"
	width := vg.Length(float64(chartWidth) * 0.6 / float64(len(h.adapters)*len(h.cases)))
	lowest, highest := math.Inf(1), 0.0
	for i, c := range h.cases {
		values := make(plotter.Values, len(h.adapters))
		for j, a := range h.adapters {
			values[j], _ = h.value(a, c) // a missing case is a missing bar
			if values[j] > 0 {
				lowest, highest = min(lowest, values[j]), max(highest, values[j])
			}
		}
		bars, err := plotter.NewBarChart(values, width)
		if err != nil {
			return nil, fmt.Errorf("bar chart %s: %w", c, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = width * vg.Length(float64(i)-float64(len(h.cases)-1)/2)
		p.Add(bars)
		p.Legend.Add(c, bars)
	}
	if highest == 0 {
		return nil, errors.New("no hit cost above zero to draw")
	}
	p.Add(plotter.NewGrid())
	p.NominalX(h.adapters...)
	p.X.Min, p.X.Max = -0.5, float64(len(h.adapters))-0.5 // room for the outer groups' bars
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = 9
	p.Legend.XOffs = 4
	p.Y.Scale = plotkit.FloorLog{}
	p.Y.Tick.Marker = durationTicks
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(lowest)))
	// Leave the top of the chart to the legend, one line per case.
	decades := math.Log10(highest / p.Y.Min)
	legend := min(0.5, 0.05+0.06*float64(len(h.cases)))
	p.Y.Max = highest * math.Pow(10, decades*legend/(1-legend))
	return p, nil
}

// roundTicks label a linear axis about five times, at multiples of 1, 2
// or 5 times a power of ten, without trailing zeros.
var roundTicks = plot.TickerFunc(func(min, max float64) []plot.Tick {
	step := math.Pow(10, math.Floor(math.Log10((max-min)/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if (max-min)/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for i := math.Ceil(min / step); i*step <= max; i++ {
		ticks = append(ticks, plot.Tick{Value: i * step, Label: strconv.FormatFloat(i*step, 'f', -1, 64)})
	}
	return ticks
})

// durationTicks are log-scale ticks labelled as durations of that many
// nanoseconds ("1µs", "100µs").
var durationTicks = plot.TickerFunc(func(min, max float64) []plot.Tick {
	ticks := plot.LogTicks{}.Ticks(min, max)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = time.Duration(t.Value).String()
		}
	}
	return ticks
})
