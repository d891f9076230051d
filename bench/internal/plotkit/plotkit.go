// Package plotkit holds what the chart and scorecard generators share when
// they draw with gonum/plot.
package plotkit

import (
	"math"

	"gonum.org/v1/plot"
)

// FloorLog is a log scale on which values at or below the axis minimum sit
// on the axis, so that bars, which start at zero, can be drawn on it.
type FloorLog struct{}

// Normalize implements [plot.Normalizer].
func (FloorLog) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}
