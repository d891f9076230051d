// Package flightotel turns the events of a flightcache [core.Cache] into
// OpenTelemetry metrics and spans. It is a module of its own, so that
// users of the cache who do not want OpenTelemetry never download it.
//
//	tel := flightotel.New() // the global MeterProvider and TracerProvider
//	c := core.New(store, core.WithEvents(tel.Events()))
//	tel.Observe(c) // optional: the local tier's size
//
// Metrics carry bounded attributes only: the route pattern, never a key,
// URL or raw path, and the request method folded to the known ones.
// Through the Prometheus exporter their names read flightcache_*_total
// for counters and flightcache_*_seconds for durations; see the README's
// Observability section for the table.
//
// Spans: every request answered by the HTTP layer adds attributes to the
// span already in its context (the server span of otelhttp, otelgin or
// otelecho). Only the slow paths start spans of their own:
// flightcache.fill (this process fills a key), flightcache.fetch (the
// origin runs) and flightcache.wait (it waits for another process's
// fill); a hit starts none. A wait woken by the commit of a fill in
// another process gets a span link to that fill's span: the filler sends
// its span context with the commit notification ([core.Events.Propagate]).
package flightotel

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/flightcache/flightcache/core"
)

// ScopeName is the instrumentation scope of the meter and tracer.
const ScopeName = "github.com/flightcache/flightcache/flightotel"

// Span names.
const (
	SpanFill  = "flightcache.fill"
	SpanFetch = "flightcache.fetch"
	SpanWait  = "flightcache.wait"
)

// Metric names (OpenTelemetry); the Prometheus exporter turns the dots
// into underscores and adds _total to counters and the unit (_seconds,
// _bytes).
const (
	MetricResponses        = "flightcache.responses"
	MetricCollapsed        = "flightcache.collapsed"
	MetricLookupDuration   = "flightcache.lookup.duration"
	MetricOriginCalls      = "flightcache.origin.calls"
	MetricOriginDuration   = "flightcache.origin.duration"
	MetricWaitDuration     = "flightcache.wait.duration"
	MetricCommits          = "flightcache.commits"
	MetricLocks            = "flightcache.locks"
	MetricErrors           = "flightcache.errors"
	MetricBreakerState     = "flightcache.breaker.state"
	MetricBreakerChanges   = "flightcache.breaker.transitions"
	MetricLocalTierSize    = "flightcache.local_tier.size"
	MetricLocalTierEvicted = "flightcache.local_tier.evictions"
	MetricLocalTierResets  = "flightcache.local_tier.resets"
	MetricInvalidations    = "flightcache.invalidations"
)

// Attribute keys. The HTTP ones are OpenTelemetry's semantic conventions;
// the others are namespaced, there being no cache conventions yet
// (semantic-conventions#1747).
const (
	AttrRoute         = attribute.Key("http.route")
	AttrMethod        = attribute.Key("http.request.method")
	AttrStatusClass   = attribute.Key("http.response.status_class") // "2xx"... "5xx", "none"
	AttrErrorType     = attribute.Key("error.type")
	AttrCacheStatus   = attribute.Key("flightcache.cache_status") // core.Served: hit, local_hit, stale, miss, collapsed, waited, bypass
	AttrBypassReason  = attribute.Key("flightcache.bypass_reason")
	AttrScope         = attribute.Key("flightcache.collapse_scope") // process, fleet
	AttrWoken         = attribute.Key("flightcache.woken")          // core.Woken
	AttrWaitServed    = attribute.Key("flightcache.wait_served")    // bool
	AttrCommitResult  = attribute.Key("flightcache.commit_result")  // core.CommitResult
	AttrLockOutcome   = attribute.Key("flightcache.lock_outcome")   // core.LockOutcome
	AttrOp            = attribute.Key("flightcache.op")             // core.Op*
	AttrBreakerState  = attribute.Key("flightcache.breaker_state")  // core.BreakerState
	AttrInvalidatedBy = attribute.Key("flightcache.invalidation_source")
	AttrFillWaited    = attribute.Key("flightcache.fill_waited") // bool
)

// Option configures [New].
type Option func(*config)

type config struct {
	mp metric.MeterProvider
	tp trace.TracerProvider
}

// WithMeterProvider sets the meter provider; the default is the global
// one (otel.GetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets the tracer provider; the default is the global
// one (otel.GetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// Telemetry holds the instruments. Create it with [New]; it is safe for
// concurrent use, and one Telemetry may serve several caches.
type Telemetry struct {
	tracer trace.Tracer

	responses, collapsed, originCalls, commits, locks, errs  metric.Int64Counter
	breakerChanges, localEvicted, localResets, invalidations metric.Int64Counter
	lookupDur, originDur, waitDur                            metric.Float64Histogram

	breaker atomic.Int64 // the breaker's state: 0 closed, 1 half-open, 2 open

	// reqAttrs caches the attribute sets of request measurements, keyed
	// by reqKey: building them per request would allocate. Its size is
	// bounded by routes × methods × statuses × reasons × classes.
	reqMu    sync.RWMutex // guards reqAttrs
	reqAttrs map[reqKey]*reqSets

	mu     sync.Mutex // guards caches
	caches []*core.Cache
}

type reqKey struct {
	route, method, reason string
	served                core.Served
	class                 uint8
}

// reqSets are the options of one kind of request's measurements, kept as
// slices: passing a single option to a variadic interface method would
// allocate its slice on every call.
type reqSets struct {
	response, collapsed []metric.AddOption
	lookup              []metric.RecordOption
	span                []attribute.KeyValue
}

// New creates the instruments. An error creating one goes to otel.Handle,
// and leaves that instrument a no-op.
func New(opts ...Option) *Telemetry {
	cfg := config{mp: otel.GetMeterProvider(), tp: otel.GetTracerProvider()}
	for _, o := range opts {
		o(&cfg)
	}
	m := cfg.mp.Meter(ScopeName)
	t := &Telemetry{tracer: cfg.tp.Tracer(ScopeName)}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil {
			otel.Handle(err)
		}
		return c
	}
	seconds := func(name, desc string, bounds ...float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		if err != nil {
			otel.Handle(err)
		}
		return h
	}
	t.responses = counter(MetricResponses, "{response}", "Responses of the HTTP layer, by how the cache served them.")
	t.collapsed = counter(MetricCollapsed, "{request}", "Requests served by another request's fill: in this process, or another process's (fleet).")
	t.originCalls = counter(MetricOriginCalls, "{call}", "Runs of a fetch function or HTTP handler for a fill (origin calls).")
	t.commits = counter(MetricCommits, "{commit}", "Attempts to store a fill's value, by result.")
	t.locks = counter(MetricLocks, "{attempt}", "Fill lock attempts by outcome, and locks found lost.")
	t.errs = counter(MetricErrors, "{error}", "Errors the cache absorbed while failing open, by operation.")
	t.breakerChanges = counter(MetricBreakerChanges, "{transition}", "Changes of the store circuit breaker's state, by the state entered.")
	t.localEvicted = counter(MetricLocalTierEvicted, "{entry}", "Entries the local tier evicted to stay within its size.")
	t.localResets = counter(MetricLocalTierResets, "{reset}", "Times the local tier was emptied because invalidations may have been missed.")
	t.invalidations = counter(MetricInvalidations, "{invalidation}", "Invalidations (purges, unsafe requests, variant index changes), by source.")
	t.lookupDur = seconds(MetricLookupDuration, "Time an HTTP request spent looking its key up.",
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
	t.originDur = seconds(MetricOriginDuration, "Duration of origin calls.",
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	t.waitDur = seconds(MetricWaitDuration, "Time a fill waited for another process's fill, by what woke it last.",
		0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
	if _, err := m.Int64ObservableGauge(MetricBreakerState, metric.WithUnit("{state}"),
		metric.WithDescription("State of the store circuit breaker: 0 closed, 1 half-open, 2 open."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(t.breaker.Load())
			return nil
		})); err != nil {
		otel.Handle(err)
	}
	if _, err := m.Int64ObservableGauge(MetricLocalTierSize, metric.WithUnit("By"),
		metric.WithDescription("Size of the local tier: keys, values and bookkeeping (caches given to Observe)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			t.mu.Lock()
			caches := t.caches
			t.mu.Unlock()
			if len(caches) == 0 {
				return nil
			}
			var n int64
			for _, c := range caches {
				n += c.Stats().Snapshot().LocalBytes
			}
			o.Observe(n)
			return nil
		})); err != nil {
		otel.Handle(err)
	}
	return t
}

// Observe adds c's local tier to the flightcache.local_tier.size gauge.
// The other metrics come from the events and need no Observe.
func (t *Telemetry) Observe(c *core.Cache) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.caches = append(t.caches[:len(t.caches):len(t.caches)], c)
}

// Events returns the functions to give [core.WithEvents].
func (t *Telemetry) Events() core.Events {
	return core.Events{
		Request:    t.request,
		FillStart:  func(ctx context.Context) context.Context { return t.start(ctx, SpanFill) },
		FillDone:   t.fillDone,
		FetchStart: func(ctx context.Context) context.Context { return t.start(ctx, SpanFetch) },
		FetchDone:  t.fetchDone,
		WaitStart:  func(ctx context.Context) context.Context { return t.start(ctx, SpanWait) },
		WaitDone:   t.waitDone,
		Lock:       t.lock,
		Commit:     t.commit,
		Error:      t.error,
		Breaker:    t.breakerChange,
		LocalTier:  t.localTier,
		Invalidate: t.invalidate,
		Propagate:  propagate,
	}
}

// Precomputed attribute sets of the engine's bounded enums.
var (
	lockSets     = enumSets(AttrLockOutcome, core.LockAcquired, core.LockHeld, core.LockFailed, core.LockLost)
	commitSets   = enumSets(AttrCommitResult, core.CommitWon, core.CommitLost, core.CommitRefused, core.CommitFailed)
	breakerSets  = enumSets(AttrBreakerState, core.BreakerClosed, core.BreakerHalfOpen, core.BreakerOpen)
	invalidSets  = enumSets(AttrInvalidatedBy, core.InvalidatedByPurge, core.InvalidatedByPurgeURL, core.InvalidatedByPurgeTags, core.InvalidatedByUnsafe, core.InvalidatedByVaryChange)
	originOK     = metric.WithAttributeSet(attribute.NewSet())
	noAttributes = metric.WithAttributeSet(attribute.NewSet())
)

func enumSets[E interface {
	~uint8
	String() string
}](key attribute.Key, values ...E) []metric.MeasurementOption {
	sets := make([]metric.MeasurementOption, len(values))
	for _, v := range values {
		sets[v] = metric.WithAttributeSet(attribute.NewSet(key.String(v.String())))
	}
	return sets
}

func pick[E ~uint8](sets []metric.MeasurementOption, v E) metric.MeasurementOption {
	if int(v) < len(sets) {
		return sets[v]
	}
	return noAttributes
}

func (t *Telemetry) start(ctx context.Context, name string) context.Context {
	ctx, _ = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	return ctx
}

func (t *Telemetry) request(ctx context.Context, e core.RequestEvent) {
	sets := t.requestSets(e)
	t.responses.Add(ctx, 1, sets.response...)
	if e.Served == core.ServedCollapsed || e.Served == core.ServedWaited {
		t.collapsed.Add(ctx, 1, sets.collapsed...)
	}
	if e.Served != core.ServedBypass {
		t.lookupDur.Record(ctx, e.Lookup.Seconds(), sets.lookup...)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(sets.span...)
	}
}

// requestSets returns the attribute sets of a request's measurements,
// built once per distinct combination.
func (t *Telemetry) requestSets(e core.RequestEvent) *reqSets {
	k := reqKey{route: e.Route, method: method(e.Method), served: e.Served, class: uint8(min(max(e.Status/100, 0), 6))}
	if e.Served == core.ServedBypass {
		k.reason = e.Bypass
	}
	t.reqMu.RLock()
	s, ok := t.reqAttrs[k]
	t.reqMu.RUnlock()
	if ok {
		return s
	}
	route, status := AttrRoute.String(k.route), AttrCacheStatus.String(e.Served.String())
	attrs := []attribute.KeyValue{route, AttrMethod.String(k.method), status, AttrStatusClass.String(statusClass(k.class))}
	span := []attribute.KeyValue{status}
	if k.reason != "" {
		attrs = append(attrs, AttrBypassReason.String(k.reason))
		span = append(span, AttrBypassReason.String(k.reason))
	}
	scope := "process"
	if e.Served == core.ServedWaited {
		scope = "fleet"
	}
	s = &reqSets{
		response:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attrs...))},
		collapsed: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(route, AttrScope.String(scope)))},
		lookup:    []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(route))},
		span:      span,
	}
	t.reqMu.Lock()
	defer t.reqMu.Unlock()
	if t.reqAttrs == nil {
		t.reqAttrs = make(map[reqKey]*reqSets)
	}
	if have, ok := t.reqAttrs[k]; ok {
		return have
	}
	t.reqAttrs[k] = s
	return s
}

func statusClass(c uint8) string {
	if c < 1 || c > 5 {
		return "none"
	}
	return strconv.Itoa(int(c)) + "xx"
}

// method folds a request method to the known ones, as OpenTelemetry's
// HTTP conventions do: any other token a client sends would be a new
// series.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func (t *Telemetry) fillDone(ctx context.Context, e core.FillEvent) {
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(AttrFillWaited.Bool(e.Waited))
	endSpan(span, e.Err)
}

func (t *Telemetry) fetchDone(ctx context.Context, e core.FetchEvent) {
	opt := originOK
	if e.Err != nil {
		opt = metric.WithAttributeSet(attribute.NewSet(AttrErrorType.String(errorType(e.Err))))
	}
	t.originCalls.Add(ctx, 1, opt)
	t.originDur.Record(ctx, e.Duration.Seconds(), opt)
	endSpan(trace.SpanFromContext(ctx), e.Err)
}

// errorType is a bounded error.type: the fetch's errors are the
// application's, so their text is not used.
func errorType(err error) string {
	if err == context.DeadlineExceeded || err == context.Canceled {
		return err.Error()
	}
	return "_OTHER"
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "")
		span.SetAttributes(AttrErrorType.String(errorType(err)))
	}
	span.End()
}

var waitSets sync.Map // [2]any{woken, served} -> MeasurementOption

func (t *Telemetry) waitDone(ctx context.Context, e core.WaitEvent) {
	k := [2]uint8{uint8(e.Woken), 0}
	if e.Served {
		k[1] = 1
	}
	opt, ok := waitSets.Load(k)
	if !ok {
		opt, _ = waitSets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(AttrWoken.String(e.Woken.String()), AttrWaitServed.Bool(e.Served))))
	}
	t.waitDur.Record(ctx, e.Duration.Seconds(), opt.(metric.MeasurementOption))
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(AttrWoken.String(e.Woken.String()), AttrWaitServed.Bool(e.Served))
	if sc := remoteSpan(e.Propagated); sc.IsValid() {
		span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("flightcache.link", "fill")}})
	}
	span.End()
}

func (t *Telemetry) lock(ctx context.Context, o core.LockOutcome) {
	t.locks.Add(ctx, 1, pick(lockSets, o))
}

func (t *Telemetry) commit(ctx context.Context, r core.CommitResult) {
	t.commits.Add(ctx, 1, pick(commitSets, r))
}

var opSets sync.Map // op -> MeasurementOption

func (t *Telemetry) error(ctx context.Context, e *core.Error) {
	opt, ok := opSets.Load(e.Op)
	if !ok {
		opt, _ = opSets.LoadOrStore(e.Op, metric.WithAttributeSet(attribute.NewSet(AttrOp.String(e.Op))))
	}
	t.errs.Add(ctx, 1, opt.(metric.MeasurementOption))
}

func (t *Telemetry) breakerChange(_, to core.BreakerState) {
	t.breaker.Store(int64(to))
	t.breakerChanges.Add(context.Background(), 1, pick(breakerSets, to))
}

func (t *Telemetry) localTier(e core.LocalTierEvent) {
	if e.Evicted > 0 {
		t.localEvicted.Add(context.Background(), int64(e.Evicted))
	}
	if e.Reset {
		t.localResets.Add(context.Background(), 1)
	}
}

func (t *Telemetry) invalidate(ctx context.Context, s core.InvalidationSource, err error) {
	opt := pick(invalidSets, s)
	if err != nil {
		opt = metric.WithAttributeSet(attribute.NewSet(AttrInvalidatedBy.String(s.String()), AttrErrorType.String("store")))
	}
	t.invalidations.Add(ctx, 1, opt)
}

// traceContext writes and reads the W3C traceparent the filler sends to
// its waiters.
var traceContext propagation.TraceContext

func propagate(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	carrier := propagation.MapCarrier{}
	traceContext.Inject(ctx, carrier)
	return carrier["traceparent"]
}

func remoteSpan(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent})
	return trace.SpanContextFromContext(ctx)
}
