package core

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Events receives what a [Cache] does, for metrics, traces and logs: the
// module github.com/flightcache/flightcache/flightotel turns them into
// OpenTelemetry metrics and spans. Give it to [New] with [WithEvents].
//
// Every field is optional, and the cache calls only those that are set:
// a nil field costs a nil check, and the zero Events costs a request
// nothing more (the hit path allocates nothing for it). The functions are
// called synchronously, from many goroutines at once, on the request path:
// they must be quick and safe for concurrent use, and must not call back
// into the Cache.
//
// The Start functions return the context the step runs on, so that a
// tracer can start a span there; the matching Done function is called
// with that context when the step ends. A Start function must return a
// context derived from the one it was given (or that one).
//
// No event carries a raw key, URL or path: the HTTP layer reports the
// route pattern, and the engine no key at all.
type Events struct {
	// Request is called once the HTTP layer ([Middleware.Serve]) answered
	// a request, with the request's context (which carries the server
	// span of otelhttp, otelgin or otelecho).
	Request func(ctx context.Context, e RequestEvent)

	// FillStart is called when this process starts a fill of a key (the
	// one caller of the key's in-process fill that leads it), FillDone
	// when it ends. The fill runs on a context detached from the leading
	// request's, but with its values (and so its span).
	FillStart func(ctx context.Context) context.Context
	FillDone  func(ctx context.Context, e FillEvent)

	// FetchStart and FetchDone bracket one run of the fetch function (the
	// HTTP handler, an origin call). The handler's request carries the
	// context FetchStart returned.
	FetchStart func(ctx context.Context) context.Context
	FetchDone  func(ctx context.Context, e FetchEvent)

	// WaitStart and WaitDone bracket a wait for another process's fill
	// of the key, whose lock that process holds.
	WaitStart func(ctx context.Context) context.Context
	WaitDone  func(ctx context.Context, e WaitEvent)

	// Lock is called with the outcome of each attempt to take a fill
	// lock, and when a filler finds its lock lost (expired or taken over).
	Lock func(ctx context.Context, o LockOutcome)

	// Commit is called with the outcome of each attempt to store a
	// fill's value.
	Commit func(ctx context.Context, r CommitResult)

	// Error is called with every error the cache absorbed, as the
	// [Observer] is ([OpBreaker] changes excepted: see Breaker).
	Error func(ctx context.Context, err *Error)

	// Breaker is called when the store circuit breaker ([WithBreaker])
	// changes state.
	Breaker func(from, to BreakerState)

	// LocalTier is called when the local tier ([WithLocalTier]) evicts
	// an entry to stay within its size, or is emptied because
	// invalidations may have been missed.
	LocalTier func(e LocalTierEvent)

	// Invalidate is called after each invalidation the cache made, by
	// its source, with the store's error if it failed.
	Invalidate func(ctx context.Context, source InvalidationSource, err error)

	// Propagate, if set, is called by a filler as it commits, with the
	// fill's context; the string it returns (a W3C traceparent, say) goes
	// with the commit's notification to the processes waiting on the key,
	// whose WaitDone sees it in [WaitEvent.Propagated]. At most
	// [MaxPropagated] bytes are sent; a longer string is dropped. Only
	// [RedisStore] and [MemoryStore] carry it; processes running an
	// earlier version ignore it, and send none.
	Propagate func(ctx context.Context) string
}

// MaxPropagated is the longest string [Events.Propagate] may return.
const MaxPropagated = 256

// RequestEvent describes one request answered by the HTTP layer.
type RequestEvent struct {
	// Route is the route pattern the adapter passed ("/p/:id",
	// "GET /p/{id}"), "" for none; never the request's path.
	Route  string
	Method string
	Served Served
	// Bypass says why a request served [ServedBypass] was not answered
	// from the cache: one of the BypassX constants.
	Bypass string
	// Status is the status code the client was sent, 0 when none was
	// (the client left while waiting).
	Status int
	// Lookup is the time spent looking the key up, Fetch the time this
	// request spent running its handler for a fill it led, and Wait the
	// rest of the time the fill took this request: waiting for another
	// request's or process's fill, taking the lock, committing.
	Lookup, Wait, Fetch time.Duration
}

// Reasons of a [ServedBypass] request ([RequestEvent.Bypass]); they are
// those of the fwd and detail parameters of the Cache-Status header.
const (
	BypassPolicy   = "bypass"    // the route's policy does not cache the request
	BypassMethod   = "method"    // a method the cache does not store (POST, ...)
	BypassRequest  = "request"   // the request may not be served the stored response (credentials, encoding)
	BypassResponse = "uri-miss"  // the response may not be stored or shared
	BypassMiss     = "miss"      // a stored response or variant index that could not be used
	BypassKeyLimit = "key-limit" // the route is over its key budget (MaxKeys)
	BypassTags     = "tags"      // the response's tags are past the bounds
	BypassOther    = "other"
)

// Served says how the cache answered a request.
type Served uint8

const (
	ServedBypass    Served = iota // not from the cache: the handler answered it alone
	ServedHit                     // from the shared store
	ServedLocalHit                // from the local tier
	ServedStale                   // a stale stored response
	ServedMiss                    // this request led the fill
	ServedCollapsed               // another request's fill in this process
	ServedWaited                  // another process's fill, waited for
)

var servedNames = [...]string{"bypass", "hit", "local_hit", "stale", "miss", "collapsed", "waited"}

func (s Served) String() string { return enumName(servedNames[:], int(s)) }

// FillEvent describes one fill, once it ended.
type FillEvent struct {
	Duration time.Duration
	// Waited says the fill was answered by another process's fill.
	Waited bool
	Err    error
}

// FetchEvent describes one run of the fetch function.
type FetchEvent struct {
	Duration time.Duration
	Err      error // the function's error, or a *panic turned error
}

// WaitEvent describes one wait for another process's fill.
type WaitEvent struct {
	Duration time.Duration
	// Woken says what ended the last pause of the wait.
	Woken Woken
	// Served says the wait ended with the other process's value; else
	// this process fetched for itself (the lock freed up, the wait timed
	// out, the value turned out uncacheable, the store failed).
	Served bool
	// Propagated is what the filler's [Events.Propagate] returned, when
	// its commit notification woke this wait; "" otherwise.
	Propagated string
}

// Woken says what ended the last pause of a wait.
type Woken uint8

const (
	WokenNone    Woken = iota // the wait ended without pausing
	WokenNotify               // the filler's notification
	WokenPoll                 // the poll interval ([WithPollInterval])
	WokenTimeout              // the wait timeout ([WithWaitTimeout])
)

var wokenNames = [...]string{"none", "notify", "poll", "timeout"}

func (w Woken) String() string { return enumName(wokenNames[:], int(w)) }

// LockOutcome is the outcome of a fill lock attempt.
type LockOutcome uint8

const (
	LockAcquired LockOutcome = iota // this fill holds the lock
	LockHeld                        // another process's fill holds it
	LockFailed                      // the store could not be reached
	LockLost                        // a held lock was found expired or taken over
)

var lockNames = [...]string{"acquired", "held", "failed", "lost"}

func (o LockOutcome) String() string { return enumName(lockNames[:], int(o)) }

// CommitResult is the outcome of storing a fill's value.
type CommitResult uint8

const (
	CommitWon     CommitResult = iota // stored
	CommitLost                        // another process's value was in place: it is served instead
	CommitRefused                     // an invalidation since the fill's lookup fenced it off
	CommitFailed                      // the store failed
)

var commitNames = [...]string{"won", "lost", "refused", "failed"}

func (r CommitResult) String() string { return enumName(commitNames[:], int(r)) }

// BreakerState is a state of the store circuit breaker.
type BreakerState uint8

const (
	BreakerClosed   BreakerState = iota // store calls go through
	BreakerHalfOpen                     // one probe call decides
	BreakerOpen                         // store calls fail at once
)

var breakerNames = [...]string{"closed", "half-open", "open"}

func (s BreakerState) String() string { return enumName(breakerNames[:], int(s)) }

// LocalTierEvent describes entries leaving the local tier other than by
// expiry or invalidation.
type LocalTierEvent struct {
	Evicted int  // entries evicted to stay within the tier's size
	Reset   bool // the tier was emptied: invalidations may have been missed
}

// InvalidationSource says what invalidated stored entries.
type InvalidationSource uint8

const (
	InvalidatedByPurge      InvalidationSource = iota // [Cache.Purge]
	InvalidatedByPurgeURL                             // [Cache.PurgeURL]
	InvalidatedByPurgeTags                            // [Cache.PurgeTags]
	InvalidatedByUnsafe                               // an unsafe request that succeeded (POST, PUT, DELETE, ...)
	InvalidatedByVaryChange                           // an unreadable or outdated variant index
)

var invalidationNames = [...]string{"purge", "purge_url", "purge_tags", "unsafe_method", "vary_index"}

func (s InvalidationSource) String() string { return enumName(invalidationNames[:], int(s)) }

func enumName(names []string, i int) string {
	if i < 0 || i >= len(names) {
		return "unknown"
	}
	return names[i]
}

// WithEvents sets the functions that receive the cache's events (see
// [Events]). The default is none.
func WithEvents(e Events) Option {
	return optionFunc(func(c *config) { c.events = e })
}

// StatsSnapshot is a copy of a [Stats] at one moment, in plain values.
type StatsSnapshot struct {
	Hits, LocalHits, Misses, Fetches, Collapsed, Waited int64
	Commits, LostCommits, FencedCommits, Errors, Stale  int64
	LocalEvictions, LocalResets                         int64
	LocalBytes                                          int64 // the local tier's size (keys, values, bookkeeping), as of its last maintenance
}

// Snapshot returns the counters' values. Each is read atomically; they
// are not read all at one instant.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		Hits: s.Hits.Load(), LocalHits: s.LocalHits.Load(), Misses: s.Misses.Load(),
		Fetches: s.Fetches.Load(), Collapsed: s.Collapsed.Load(), Waited: s.Waited.Load(),
		Commits: s.Commits.Load(), LostCommits: s.LostCommits.Load(), FencedCommits: s.FencedCommits.Load(),
		Errors: s.Errors.Load(), Stale: s.Stale.Load(),
		LocalEvictions: s.LocalEvictions.Load(), LocalResets: s.LocalResets.Load(),
	}
	if l := s.local.Load(); l != nil {
		snap.LocalBytes = int64(l.entries.WeightedSize())
	}
	return snap
}

// Engine call sites. Each checks its field, so that an unset one costs a
// nil check.

func (c *Cache) lockOutcome(ctx context.Context, o LockOutcome) {
	if f := c.cfg.events.Lock; f != nil {
		f(ctx, o)
	}
}

func (c *Cache) committed(ctx context.Context, r CommitResult) {
	if f := c.cfg.events.Commit; f != nil {
		f(ctx, r)
	}
}

func (c *Cache) invalidated(ctx context.Context, s InvalidationSource, err error) {
	if f := c.cfg.events.Invalidate; f != nil {
		f(ctx, s, err)
	}
}

// reported hands an absorbed error to the events and the logger.
func (c *Cache) reported(ctx context.Context, e *Error) {
	if e.Op == OpBreaker {
		var bc *breakerChange
		if errors.As(e.Err, &bc) {
			if f := c.cfg.events.Breaker; f != nil {
				f(bc.from, bc.to)
			}
			if c.log != nil {
				c.log.breaker(bc.from, bc.to)
			}
		}
		return
	}
	switch {
	case (e.Op == OpExtend || e.Op == OpUnlock) && errors.Is(e.Err, ErrLockNotHeld):
		c.lockOutcome(ctx, LockLost)
	case e.Op == OpLock:
		c.lockOutcome(ctx, LockFailed)
	}
	if f := c.cfg.events.Error; f != nil {
		f(ctx, e)
	}
	if c.log != nil {
		c.log.error(ctx, e)
	}
}

// fillStarted calls FillStart, if set, and returns the fill's context and
// the function that ends it.
func (c *Cache) fillStarted(ctx context.Context) (context.Context, func(r result, err error)) {
	ev := &c.cfg.events
	if ev.FillStart == nil && ev.FillDone == nil {
		return ctx, nil
	}
	if ev.FillStart != nil {
		ctx = ev.FillStart(ctx)
	}
	start := time.Now()
	return ctx, func(r result, err error) {
		if ev.FillDone != nil {
			ev.FillDone(ctx, FillEvent{Duration: time.Since(start), Waited: r.source == fromWaited, Err: err})
		}
	}
}

// waitStarted calls WaitStart, if set, and returns the wait's context and
// the function that ends it; slot receives the filler's propagated string.
func (c *Cache) waitStarted(ctx context.Context) (context.Context, func(woken Woken, served bool), *atomic.Pointer[string]) {
	ev := &c.cfg.events
	if ev.WaitStart == nil && ev.WaitDone == nil {
		return ctx, nil, nil
	}
	if ev.WaitStart != nil {
		ctx = ev.WaitStart(ctx)
	}
	start := time.Now()
	slot := new(atomic.Pointer[string])
	return ctx, func(woken Woken, served bool) {
		if ev.WaitDone != nil {
			e := WaitEvent{Duration: time.Since(start), Woken: woken, Served: served}
			if p := slot.Load(); p != nil && woken == WokenNotify {
				e.Propagated = *p
			}
			ev.WaitDone(ctx, e)
		}
	}, slot
}

// propagating returns ctx carrying the string the fill on ctx sends with
// its commit notification, if Propagate is set.
func (c *Cache) propagating(ctx context.Context) context.Context {
	if f := c.cfg.events.Propagate; f != nil {
		if s := f(ctx); s != "" && len(s) <= MaxPropagated {
			return context.WithValue(ctx, propagateKey{}, s)
		}
	}
	return ctx
}

type propagateKey struct{}

// propagated is the string a store sends with a commit notification made
// on ctx ("" for none).
func propagated(ctx context.Context) string {
	s, _ := ctx.Value(propagateKey{}).(string)
	return s
}

// wakeSlotKey is the context key of the slot in which a Subscribe's
// notifications leave the filler's propagated string.
type wakeSlotKey struct{}

func wakeSlot(ctx context.Context) *atomic.Pointer[string] {
	s, _ := ctx.Value(wakeSlotKey{}).(*atomic.Pointer[string])
	return s
}

// requestTimes collects what one observed request's fill flow did.
type requestTimes struct {
	lookup, join, fetch time.Duration
	source              source
	loaded              bool
}

// observedWriter is the response writer of an observed request: it notes
// the status sent, and carries the request's times to the fill flow.
type observedWriter struct {
	http.ResponseWriter
	status int
	times  requestTimes
}

func (w *observedWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *observedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes through; [http.ResponseController] finds the rest by Unwrap.
func (w *observedWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack passes through, for handlers that assert [http.Hijacker].
func (w *observedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *observedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	_ http.Flusher  = (*observedWriter)(nil)
	_ http.Hijacker = (*observedWriter)(nil)
)

// timesOf returns the times of the observed request whose writer is w.
func timesOf(w http.ResponseWriter) *requestTimes {
	if ow, ok := w.(*observedWriter); ok {
		return &ow.times
	}
	return nil
}

// serveObserved is Serve for a cache with a Request event: it serves the
// request through an observedWriter, then reports it.
func (rt *Middleware) serveObserved(w http.ResponseWriter, r *http.Request, pattern string, next func(http.ResponseWriter, *http.Request) error) error {
	ow := &observedWriter{ResponseWriter: w}
	err := rt.Serve(ow, r, pattern, next)
	t := &ow.times
	e := RequestEvent{Route: pattern, Method: r.Method, Status: ow.status, Lookup: t.lookup, Fetch: t.fetch}
	e.Wait = max(0, t.join-t.fetch)
	e.Served, e.Bypass = rt.c.served(w.Header(), t)
	rt.c.cfg.events.Request(r.Context(), e)
	return err
}

// served reads how a request was served from the cache headers it was
// sent, and where its fill flow got the response from.
func (c *Cache) served(h http.Header, t *requestTimes) (Served, string) {
	switch headerValue(h, c.cfg.cacheHeader) {
	case "MISS":
		return ServedMiss, ""
	case "STALE":
		return ServedStale, ""
	case "HIT":
		switch {
		case !t.loaded:
			return ServedHit, "" // HEAD or Range: from the store
		case t.source == fromLocal:
			return ServedLocalHit, ""
		case t.source == fromCollapsed:
			return ServedCollapsed, ""
		case t.source == fromWaited:
			return ServedWaited, ""
		}
		return ServedHit, ""
	}
	status := headerValue(h, CacheStatusHeader)
	reason := BypassOther
	for param := range strings.SplitSeq(status, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(param), "=")
		switch name {
		case "fwd":
			reason = value
		case "detail":
			if value == BypassKeyLimit || value == BypassTags {
				return ServedBypass, value
			}
		}
	}
	switch reason {
	case BypassPolicy, BypassMethod, BypassRequest, BypassResponse, BypassMiss:
		return ServedBypass, reason
	}
	return ServedBypass, BypassOther
}

func (c *Cache) localTierChanged(e LocalTierEvent) {
	c.stats.LocalEvictions.Add(int64(e.Evicted))
	if e.Reset {
		c.stats.LocalResets.Add(1)
	}
	if f := c.cfg.events.LocalTier; f != nil {
		f(e)
	}
}
