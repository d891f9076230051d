package core

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// WithLogger sends the errors the cache absorbed (see [Error]) and the
// store circuit breaker's changes of state to l: errors at level Warn
// with their op and hashed key, breaker changes at Warn when it opens and
// Info otherwise. Errors are rate-limited, so that a Redis outage, which
// fails every request's store calls, does not flood the log: at most
// [LogBurst] records per second, the rest counted and reported as
// "suppressed" in the next record logged. Breaker changes are always
// logged (the breaker's cool-down bounds them). The default is no logger.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// LogBurst is the most error records [WithLogger] writes in one second.
const LogBurst = 10

// errorLog writes absorbed errors to a logger at most LogBurst a second.
// A fixed one-second window is all it takes: a few lines, where
// golang.org/x/time/rate would add a dependency for smoothness a log does
// not need.
type errorLog struct {
	l *slog.Logger

	mu         sync.Mutex // guards the fields below
	window     time.Time  // start of the current second
	written    int        // records written in it
	suppressed int        // records dropped since the last one written
}

func newErrorLog(l *slog.Logger) *errorLog {
	if l == nil {
		return nil
	}
	return &errorLog{l: l}
}

// admit reports whether a record may be written now, and how many were
// dropped before it.
func (g *errorLog) admit(now time.Time) (ok bool, dropped int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.window) >= time.Second {
		g.window, g.written = now, 0
	}
	if g.written >= LogBurst {
		g.suppressed++
		return false, 0
	}
	g.written++
	dropped, g.suppressed = g.suppressed, 0
	return true, dropped
}

func (g *errorLog) error(ctx context.Context, e *Error) {
	ok, dropped := g.admit(time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.String("op", e.Op), slog.String("error", e.Err.Error())}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("suppressed", dropped))
	}
	g.l.LogAttrs(ctx, slog.LevelWarn, "flightcache: absorbed error", attrs...)
}

func (g *errorLog) breaker(from, to BreakerState) {
	level := slog.LevelInfo
	if to == BreakerOpen {
		level = slog.LevelWarn
	}
	g.l.LogAttrs(context.Background(), level, "flightcache: store circuit breaker "+to.String(),
		slog.String("from", from.String()), slog.String("to", to.String()))
}
