package core

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// Serve answers r through the cache under the policy of the route
// pattern (see [PerRoute]; "" for none). A cacheable request is answered
// from the store or, on a miss, by next, run once per key across the fleet
// while the other requests for the key wait; next writes into a recorder,
// not into w, and the response is stored if it may be shared. A request
// that may not be cached, or a response that may not be shared, goes to
// next with w itself.
//
// next is the rest of the handler chain. The request it gets carries a
// context detached from r's (bounded by [WithFetchTimeout]) so that a
// client leaving does not cancel a fill other requests wait for. An error
// it returns (or a panic) is returned by Serve to this request only, and
// nothing is stored; the requests waiting on the same fill look again, as
// they do after an error status, and run their own after a second failed
// fill. A request
// with credentials never leads a fill others wait on. Serve itself returns
// no other errors: store failures are absorbed (see [Cache.Do]), and when
// r's context ends while it waits for another request's fill it returns
// nil without writing, the client being gone.
//
// Every response carries the cache header ([WithCacheHeader]): HIT when it
// came from the store or another request's fill, MISS when this request
// filled it, STALE when a stale entry stood in (stale-while-revalidate,
// stale-if-error), BYPASS when it was not cached. Stored responses carry
// Age. A response the handler marked with [DoNotStore] goes to its own
// request only.
func (rt *Middleware) Serve(w http.ResponseWriter, r *http.Request, pattern string, next func(http.ResponseWriter, *http.Request) error) error {
	c := rt.c
	if c.cfg.events.Request != nil && timesOf(w) == nil {
		return rt.serveObserved(w, r, pattern, next)
	}
	p := rt.policyFor(pattern)
	if unsafeMethod(r.Method) {
		return rt.serveUnsafe(w, r, pattern, next)
	}
	var buf [256]byte // the key on the stack, for most URLs
	hs := scanRequestHeaders(r.Header)
	b, ok := p.appendRequestKey(buf[:0], r, hs)
	if !ok {
		fwd := "bypass"
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			fwd = "method"
		}
		c.mark(w.Header(), "BYPASS", "fwd="+fwd)
		return next(rt.passWriter(w), r)
	}
	mk := c.keys.memoKeys(c.cfg.namespace, b)
	ukey, key := mk.ukey, mk.skey
	credentialed := p.credentialed(r, hs)
	var now time.Time // one reading of the clock for the hit path
	if c.local != nil || p.earlyRefresh > 0 {
		now = c.now()
	}
	var gap time.Duration // early refresh: how sparse the key's requests are
	if p.earlyRefresh > 0 && !credentialed && r.Method == http.MethodGet && hs&hasRange == 0 {
		gap = mk.arrived(now) // only requests that may set a refresh off
	}
	if c.local != nil {
		// A hit from the local tier is answered here, before anything a
		// fill needs is set up: it is the same hit the lookup of a
		// fill would find, served from one shared decoded response.
		// A hit due for an early refresh takes the fill's path, which
		// serves it and then refreshes the entry.
		if res, ok := c.local.lookupMemo(mk, now); ok && !entry.IsVariants(res.value) &&
			!c.refreshesEarly(key, res, p.earlyRefresh, credentialed, gap) {
			if resp, err := res.local.response(); err == nil {
				c.stats.LocalHits.Add(1)
				c.stats.Hits.Add(1)
				if c.cfg.events.Request != nil {
					timesOf(w).source, timesOf(w).loaded = fromLocal, true
				}
				return rt.serveHit(w, r, next, credentialed, resp, res, now)
			}
		}
	}
	f := &fill{rt: rt, p: p, w: w, r: r, next: next, ukey: ukey, key: key, credentialed: credentialed, gap: gap}
	if r.Method == http.MethodHead || hs&hasRange != 0 && headerValue(r.Header, "Range") != "" {
		// HEAD is answered from a stored GET, but never fills one: a
		// handler's HEAD response may lack the body a GET needs. A range
		// request is answered from a stored full response, but never
		// fills one either: its handler answers with part of it.
		return f.serveStored()
	}
	f.limit = rt.keyLimiter(pattern, p)
	return f.serveFilled()
}

// fill serves one cacheable request, filling the cache with its handler
// when it leads a fill.
type fill struct {
	rt   *Middleware
	p    *policy
	w    http.ResponseWriter
	r    *http.Request
	next func(http.ResponseWriter, *http.Request) error
	ukey string // the request's key before hashing
	key  string // its store key
	// credentialed is set when the request carries Authorization the key
	// leaves out: its response is stored only if it says it may be.
	credentialed bool
	limit        *keyLimiter   // nil: no MaxKeys
	gap          time.Duration // see flight.gap
}

// keyLimited is the note of a fill over its route's key limit ([MaxKeys]).
type keyLimited struct{}

// ownVariant is the note a fill that started a variant index hands back
// to the request that led it: the first variant, stored under the index
// of that generation.
type ownVariant struct {
	result     result
	generation string
}

// serveHit answers r at now with a stored response found by a lookup
// (res), or passes it on when the response may not be served to it.
func (rt *Middleware) serveHit(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request) error, credentialed bool, resp *storedResponse, res result, now time.Time) error {
	if credentialed && !resp.credentials || !acceptsEncoding(r, resp.Header) {
		// A stored response not meant for requests with credentials, or
		// in a coding this request does not accept (made for another
		// request): this one goes to the handler.
		rt.c.mark(w.Header(), "BYPASS", "fwd=request")
		return next(rt.passWriter(w), r)
	}
	rt.c.replay(w, r, resp, res, now)
	return nil
}

// serveStored answers from a stored response, or passes the request on.
func (f *fill) serveStored() error {
	c, ctx := f.rt.c, f.r.Context()
	key := f.key
	res, ok := c.cached(ctx, key)
	if ok && entry.IsVariants(res.value) {
		var v entry.Variants
		if v, ok = c.variants(ctx, key, res.value); ok {
			res, ok = c.cached(ctx, c.variantStoreKey(f.ukey, v, f.r))
		}
	}
	if ok {
		resp, err := res.response()
		if err == nil && (f.credentialed && !resp.credentials || !acceptsEncoding(f.r, resp.Header)) {
			c.mark(f.w.Header(), "BYPASS", "fwd=request")
			return f.next(f.rt.passWriter(f.w), f.r)
		}
		if err == nil {
			c.stats.Hits.Add(1)
			c.replay(f.w, f.r, &resp, res, c.now())
			return nil
		}
	}
	c.mark(f.w.Header(), "BYPASS", "fwd=uri-miss")
	return f.next(f.rt.passWriter(f.w), f.r)
}

// serveFilled answers from the store or from a fill: this request's own,
// another request's in this process, or another process's.
func (f *fill) serveFilled() error {
	c, ctx := f.rt.c, f.r.Context()
	key := f.key
	res, err := f.load(key, nil)
	if err == nil && res.source != fromAlone && !res.delivered && entry.IsVariants(res.value) {
		// The URL's responses vary on request headers: key holds the
		// index of its variants, and this request's is filled or served
		// under a key of its own.
		v, ok := c.variants(ctx, key, res.value)
		own, led := res.note.(ownVariant)
		switch {
		case !ok:
			c.mark(f.w.Header(), "BYPASS", "fwd=miss")
			return f.next(f.rt.passWriter(f.w), f.r)
		case led && own.generation == v.Generation:
			res = own.result // this request filled it, as the index's first variant
		default:
			res, err = f.load(c.variantStoreKey(f.ukey, v, f.r), &v)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil // the client is gone
	case err != nil:
		return err
	case res.delivered:
		return nil // this request's own fill answered it
	case res.source == fromAlone:
		// Nothing this request may be served: its handler answers it.
		c.mark(f.w.Header(), "BYPASS", "fwd=uri-miss")
		return f.next(f.rt.passWriter(f.w), f.r)
	}
	resp, err := res.response()
	if err != nil {
		c.report(ctx, OpDecode, key, err)
		c.mark(f.w.Header(), "BYPASS", "fwd=miss")
		return f.next(f.rt.passWriter(f.w), f.r)
	}
	if f.credentialed && res.shared && !resp.credentials ||
		res.source != fromFill && !acceptsEncoding(f.r, resp.Header) {
		// A stored response not meant for requests with credentials, or
		// in a coding this request does not accept (made for another
		// request): this one goes to the handler.
		c.mark(f.w.Header(), "BYPASS", "fwd=request")
		return f.next(f.rt.passWriter(f.w), f.r)
	}
	if res.refresh != nil && f.r.ProtoMajor == 1 {
		// The refresh runs on this request's handler chain after the
		// response; the client's next request must not wait behind it on
		// this connection.
		f.w.Header().Set("Connection", "close")
	}
	c.replay(f.w, f.r, &resp, res, c.now())
	if res.refresh != nil {
		http.NewResponseController(f.w).Flush()
		res.refresh()
	}
	return nil
}

// load fills or finds key with this request's handler. index is the
// variant index key belongs to, nil when key is the URL's own key.
func (f *fill) load(key string, index *entry.Variants) (res result, err error) {
	defer func() {
		// The engine re-raises a handler's panic in every request of the
		// fill, wrapped; net/http treats one value specially.
		if v := recover(); v != nil {
			if p, ok := v.(*panicError); ok && p.value == http.ErrAbortHandler {
				panic(http.ErrAbortHandler)
			}
			panic(v)
		}
	}()
	var times *requestTimes // an observed request's (Events.Request)
	if f.rt.c.cfg.events.Request != nil {
		times = timesOf(f.w)
	}
	res, err = f.rt.c.load(f.r.Context(), key, flight{
		bound:       true,
		solo:        f.credentialed,
		ownFailures: true,
		tagged:      true,
		times:       times,
		fetch: func(ctx context.Context, stale []byte) (outcome, error) {
			if t := timesOf(f.w); t != nil {
				defer func(began time.Time) { t.fetch += time.Since(began) }(time.Now())
			}
			return f.fetch(ctx, key, index, stale)
		},
		staleOK: func(stale result) bool {
			if entry.IsVariants(stale.value) {
				return false
			}
			resp, err := entry.DecodeResponse(stale.value)
			return err == nil && f.rt.c.now().Sub(stale.storedAt.Add(stale.ttl)) < f.p.staleWindow(resp.Header)
		},
		early:  f.p.earlyRefresh,
		gap:    f.gap,
		jitter: f.p.ttlJitter,
		// A variant index is refilled when it expires, not early: its
		// refill starts a new generation of the URL's variants.
		earlyOK: func(hit result) bool { return !entry.IsVariants(hit.value) },
		background: func(ctx context.Context, stale []byte) (outcome, error) {
			// The request has its answer: the handler writes into a sink.
			g := *f
			g.w = &sinkWriter{header: http.Header{}}
			return g.fetch(ctx, key, index, stale)
		},
	})
	if times != nil {
		times.source, times.loaded = res.source, true
	}
	return res, err
}

// sinkWriter is the client writer of an early refresh's fill: the
// request it runs for has been answered, so what would reach the client
// (a streamed or unstorable response) goes nowhere.
type sinkWriter struct {
	header http.Header
}

func (w *sinkWriter) Header() http.Header         { return w.header }
func (w *sinkWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *sinkWriter) WriteHeader(int)             {}

// fetch runs the handler into a recorder and returns the response to
// store at key, with its freshness lifetime and how long to keep it after.
func (f *fill) fetch(ctx context.Context, key string, index *entry.Variants, stale []byte) (outcome, error) {
	c, p := f.rt.c, f.p
	began := time.Now()
	// Over the route's key limit, the response is not stored, but the
	// requests waiting on this fill still share it: a budget spent by
	// junk queries must not turn a herd on a new key into a herd of
	// origin calls.
	overLimit := f.limit != nil && !f.limit.admit(key, c.now())
	// A stale stored response with the upstream's validators is
	// revalidated: the fill asks conditionally, and a 304 freshens the
	// stored response instead of replacing it.
	old, validated := revalidation(stale)
	// Once the response streams, it belongs to this one client again: the
	// recorder then ties the handler's context back to the client's, so a
	// stream ends when its client leaves.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rec := newRecorder(f.rt.passWriter(f.w), c.cfg.cacheHeader, p.maxBody)
	rec.onStream = func() { context.AfterFunc(f.r.Context(), cancel) }
	err := f.next(rec, fillRequest(ctx, f.r, old.Header, validated))
	if rec.streamed {
		return outcome{share: shareNone, delivered: true}, err
	}
	var resp entry.Response
	var tags []entry.Tag
	tagFault := noTagFault
	if err == nil {
		resp = rec.response()
		tags, tagFault = f.tags(resp.Header)
	}
	if err != nil || originFailed(resp.Status) {
		// The refill failed: the stale entry, if the engine finds it
		// still within this window, goes to every request of the fill.
		if window := f.staleIfErrorWindow(stale); window > 0 {
			o := outcome{share: staleOnError, staleIfError: window}
			if err == nil {
				o.value = entry.EncodeResponse(resp)
			}
			return o, err
		}
	}
	if err != nil {
		return outcome{}, err
	}
	if rec.doNotStore {
		// The handler said so ([DoNotStore]): this request's alone. No
		// uncacheable marker: one request's signal must not switch
		// caching off for the URL; the requests waiting on it get their
		// own answer.
		return outcome{value: entry.EncodeResponse(resp), share: shareLeader}, nil
	}
	inherit := false
	if resp.Status == http.StatusNotModified && validated {
		resp = freshen(old, resp.Header)
		inherit = true // the stale entry's tags, which its header no longer holds
	}
	ttl, ok := p.storable(resp, c.now())
	if f.credentialed && (!ok || !sharedWithCredentials(resp.Header)) {
		// Personal to this request: neither stored nor shared, and no
		// uncacheable marker either, which would let anyone sending
		// Authorization turn caching off for the URL.
		return outcome{value: entry.EncodeResponse(resp), share: sharePersonal}, nil
	}
	if !ok {
		if resp.Status >= 400 {
			// An error the request may have caused itself (a 401 for its
			// missing credentials, a 406 for its Accept, a 5xx its headers
			// triggered): not evidence that the URL cannot be cached, so
			// no marker, and not an answer for the requests waiting on it.
			return outcome{value: entry.EncodeResponse(resp), share: shareLeader}, nil
		}
		// The response itself says it may not be shared (no-store,
		// private, Set-Cookie, Vary: *): true of the URL, for now.
		return outcome{value: entry.EncodeResponse(resp), share: shareNone}, nil
	}
	if tagFault != noTagFault {
		// Tags past the bounds: a purge could not be relied on to reach
		// this response, so it is not stored, and goes to this request.
		// Only the response's own tags say so about the URL (and mark it
		// uncacheable for a while): tags derived from this request speak
		// for this request alone.
		c.mark(f.w.Header(), "BYPASS", "fwd=uri-miss; detail=tags")
		f.deliver(resp)
		share := shareNone
		if tagFault == requestTagFault {
			share = sharePersonal
		}
		return outcome{share: share, delivered: true}, nil
	}
	keep := max(p.staleWindow(resp.Header), p.staleIfErrorWindow(resp.Header))
	if hasValidators(resp.Header) {
		keep = max(keep, min(max(ttl, time.Minute), time.Hour)) // room to revalidate
	}
	withETag(resp)
	names := p.variedOn(resp.Header)
	if overLimit {
		// Shared only with requests it may be served to: not one that
		// varies (they may differ in what it varies on).
		share := shareCallers
		if len(names) > 0 || varyAll(resp.Header) {
			share = sharePersonal
		}
		return outcome{value: entry.EncodeResponse(resp), share: share, note: keyLimited{}}, nil
	}
	switch {
	case len(names) == 0:
		return outcome{value: entry.EncodeResponse(resp), ttl: ttl, keep: keep, tags: tags, inheritTags: inherit}, nil
	case index == nil:
		// The first response for the URL that varies: store it as the
		// first variant of a new index, then the index under the URL's
		// key, in that order, so that whoever finds the index finds
		// this variant too.
		v := entry.Variants{Names: names, Generation: newGeneration()}
		vkey := storeKey(c.cfg.namespace, variantKey(f.ukey, v, f.r))
		own := ownVariant{result: c.commitSecondary(ctx, vkey, entry.EncodeResponse(resp), ttl, keep, tags, began), generation: v.Generation}
		return outcome{value: entry.EncodeVariants(v), ttl: min(ttl+keep, VariantIndexTTL), note: own}, nil
	case !subset(names, index.Names):
		// This response varies on headers the URL's index does not name
		// (a CORS middleware adds Vary: Origin only when Origin is sent):
		// it cannot be filed under the index, so it goes to this request
		// alone. The index stays: one request must not retire every
		// stored variant. If the handler changed for good, the index,
		// which lives only as long as its first variant is kept, gives
		// way to a new one when it expires.
		return outcome{value: entry.EncodeResponse(resp), share: shareLeader}, nil
	}
	return outcome{value: entry.EncodeResponse(resp), ttl: ttl, keep: keep, tags: tags, inheritTags: inherit}, nil
}

// tagFault says which source of a response's tags put them past the
// bounds.
type tagFault uint8

const (
	noTagFault      tagFault = iota
	headerTagFault           // the response's tag header
	requestTagFault          // the route's Tags, from the request
)

// tags returns the tags of a response with header h: those of its tag
// header, which it removes from h unless the cache keeps it, and those
// the route's Tags derive from the request, and which of the two, if
// any, put them past the bounds (see WithTagHeader).
func (f *fill) tags(h http.Header) ([]entry.Tag, tagFault) {
	c := f.rt.c
	var b tagBuilder
	for _, line := range h[c.cfg.tagHeader] {
		for t := range strings.FieldsSeq(line) {
			b.add(t)
		}
	}
	if !c.cfg.keepTagHeader {
		delete(h, c.cfg.tagHeader)
	}
	if b.bad {
		return nil, headerTagFault
	}
	for _, derive := range f.p.tags {
		for _, t := range derive(f.r) {
			b.add(t)
		}
	}
	if b.bad {
		return nil, requestTagFault
	}
	return b.set, noTagFault
}

// deliver writes a recorded response to the fill's own client, as the
// handler wrote it (the fill ran it without the client's conditions).
func (f *fill) deliver(resp entry.Response) {
	h := f.w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if bodyAllowed(resp.Status) {
		h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	}
	f.w.WriteHeader(resp.Status)
	if f.r.Method != http.MethodHead && bodyAllowed(resp.Status) {
		f.w.Write(resp.Body)
	}
}

// passWriter returns w, or w wrapped to remove the tag header from what
// a handler writes straight to the client, unless the cache keeps it.
// Responses replayed from the store do not need it: their header was
// removed before they were stored.
func (rt *Middleware) passWriter(w http.ResponseWriter) http.ResponseWriter {
	if rt.c.cfg.keepTagHeader {
		return w
	}
	return &tagStripper{ResponseWriter: w, name: rt.c.cfg.tagHeader}
}

// tagStripper removes the tag header from a response as it goes out.
type tagStripper struct {
	http.ResponseWriter
	name string
}

var (
	_ http.Flusher  = (*tagStripper)(nil)
	_ http.Hijacker = (*tagStripper)(nil)
)

func (w *tagStripper) strip() { delete(w.ResponseWriter.Header(), w.name) }

func (w *tagStripper) WriteHeader(code int) {
	w.strip()
	w.ResponseWriter.WriteHeader(code)
}

func (w *tagStripper) Write(b []byte) (int, error) {
	w.strip()
	return w.ResponseWriter.Write(b)
}

// Flush passes through; [http.ResponseController] finds the rest by Unwrap.
func (w *tagStripper) Flush() {
	w.strip()
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack passes through, for handlers that assert [http.Hijacker]
// (WebSocket upgrades bypass the cache with this writer).
func (w *tagStripper) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *tagStripper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// staleIfErrorWindow returns how long past its freshness the key's stale
// entry may stand in for a failed refill, or 0 when there is none, or it
// may not be served to this request.
func (f *fill) staleIfErrorWindow(stale []byte) time.Duration {
	if stale == nil || entry.IsVariants(stale) {
		return 0
	}
	old, err := entry.DecodeResponse(stale)
	if err != nil || f.credentialed && !sharedWithCredentials(old.Header) {
		return 0
	}
	return f.p.staleIfErrorWindow(old.Header)
}

// fillRequest is the request a fill runs the handler with: on the fill's
// detached context and without the client's conditional headers, so that
// it produces the full response every waiting request may be served (each
// request's own conditions are then checked against it). When a stale
// entry is being revalidated, it carries that entry's validators instead.
func fillRequest(ctx context.Context, r *http.Request, stale http.Header, validated bool) *http.Request {
	conditional := validated
	for _, h := range conditionalHeaders {
		if _, ok := r.Header[h]; ok {
			conditional = true
		}
	}
	if !conditional {
		return r.WithContext(ctx)
	}
	r = r.Clone(ctx)
	for _, h := range conditionalHeaders {
		r.Header.Del(h)
	}
	if validated {
		if etag := stale.Get("Etag"); etag != "" && !computedETag(etag) {
			r.Header.Set("If-None-Match", etag)
		}
		if lm := stale.Get("Last-Modified"); lm != "" {
			r.Header.Set("If-Modified-Since", lm)
		}
	}
	return r
}

// CacheStatusHeader is the RFC 9211 response header the cache sets beside
// its simple cache header, under the cache name "flightcache".
const CacheStatusHeader = "Cache-Status"

// mark sets the simple cache header and the Cache-Status header.
func (c *Cache) mark(h http.Header, simple, status string) {
	h.Set(c.cfg.cacheHeader, simple)
	h.Set(CacheStatusHeader, "flightcache; "+status)
}

// storedResponse is a stored response decoded for serving, with what
// every hit on it would otherwise work out again. One decoded by the
// local tier (shared) is served to many requests at once, from any
// number of goroutines: nothing may modify it, so replay hands a
// ResponseWriter copies of its header's value slices, which whatever
// runs after the cache is free to modify.
type storedResponse struct {
	entry.Response                            // Header and Body are never modified
	fields         []storedField              // shared only: Header's fields, to range over without a map iterator
	values         int                        // shared only: header field values in all
	length         string                     // shared only: Content-Length of the body, if it has one
	initialAge     time.Duration              // its Age when stored
	credentials    bool                       // sharedWithCredentials(Header)
	shared         bool                       // served to many requests: never handed out
	hit            *atomic.Pointer[hitFields] // shared only
}

// storedField is one header field of a stored response.
type storedField struct {
	name   string
	values []string
}

// hitFields are the Cache-Status and Age fields of a hit on a shared
// stored response, remembered for the second they were made for: hits
// within that second share them instead of formatting their own.
type hitFields struct {
	ttl, age int64 // seconds
	status   string
	ageValue string
}

// decodeStoredResponse decodes value as a stored response, for one
// request; see sharedStoredResponse for one served to many.
func decodeStoredResponse(value []byte) (storedResponse, error) {
	resp, err := entry.DecodeResponse(value)
	if err != nil {
		return storedResponse{}, err
	}
	sr := storedResponse{Response: resp, credentials: sharedWithCredentials(resp.Header)}
	sr.initialAge, _ = initialAge(resp.Header) // valid if stored; a fill's own is not used
	return sr, nil
}

// sharedStoredResponse decodes value as a stored response to be served
// to many requests, with what every hit would otherwise work out again.
func sharedStoredResponse(value []byte) (*storedResponse, error) {
	sr, err := decodeStoredResponse(value)
	if err != nil {
		return nil, err
	}
	sr.shared = true
	sr.hit = new(atomic.Pointer[hitFields])
	if bodyAllowed(sr.Status) {
		sr.length = strconv.Itoa(len(sr.Body))
	}
	sr.fields = make([]storedField, 0, len(sr.Header))
	for k, vs := range sr.Header {
		sr.fields = append(sr.fields, storedField{k, vs})
		sr.values += len(vs)
	}
	return &sr, nil
}

// response returns the result's value decoded as a stored response: for
// a local hit the local tier's shared one (a copy of its fields, which
// refer to the same header and body), else this request's own.
func (res result) response() (storedResponse, error) {
	if res.local != nil {
		sr, err := res.local.response()
		if err != nil {
			return storedResponse{}, err
		}
		return *sr, nil
	}
	return decodeStoredResponse(res.value)
}

// hitStatus returns the Cache-Status field value of a hit from the local
// tier with ttl seconds of freshness left, and the Age field value age.
func (sr *storedResponse) hitStatus(ttl, age int64) (status, ageValue string) {
	if sr.hit != nil {
		if f := sr.hit.Load(); f != nil && f.ttl == ttl && f.age == age {
			return f.status, f.ageValue
		}
	}
	var buf [64]byte
	b := strconv.AppendInt(append(buf[:0], "flightcache; hit; ttl="...), ttl, 10)
	f := &hitFields{ttl: ttl, age: age, status: string(append(b, "; detail=l1"...)), ageValue: strconv.FormatInt(age, 10)}
	if sr.hit != nil {
		sr.hit.Store(f)
	}
	return f.status, f.ageValue
}

// replay writes a stored response to w, or a 304 when r's conditions
// match it, at now. resp is only read: a shared one is served to other
// requests at the same time.
func (c *Cache) replay(w http.ResponseWriter, r *http.Request, resp *storedResponse, res result, now time.Time) {
	h := w.Header()
	stored := !res.storedAt.IsZero()
	// The fields replay adds, and the copies of a shared response's
	// header values, share one backing array: a hit allocates the same
	// small number of times whatever it serves. Each field gets a full
	// slice expression, so appending to one cannot touch the next.
	n := 4 // cache header, Cache-Status, Age, Content-Length
	if resp.shared {
		n += resp.values
	}
	added := make([]string, n)
	simple := "HIT"
	var age, elapsed time.Duration
	if stored {
		// The age it had when stored (its own Age header) plus the time
		// since: the same answer from every process.
		elapsed = now.Sub(res.storedAt)
		age = resp.initialAge + max(0, elapsed)
	}
	_, limited := res.note.(keyLimited)
	if res.source == fromLocal && !limited {
		ttl := int64((res.ttl - elapsed) / time.Second)
		added[1], added[2] = resp.hitStatus(max(ttl, 0), int64(age/time.Second))
	} else {
		var buf [96]byte
		status := append(buf[:0], "flightcache; "...)
		switch {
		case limited:
			simple = "BYPASS"
			status = append(status, "fwd=bypass; detail=key-limit"...)
		case res.source == fromFill && !res.shared:
			simple = "BYPASS"
			status = strconv.AppendInt(append(status, "fwd=uri-miss; fwd-status="...), int64(resp.Status), 10)
		case res.source == fromFill:
			simple = "MISS"
			status = strconv.AppendInt(append(status, "fwd=uri-miss; fwd-status="...), int64(resp.Status), 10)
			if stored {
				status = append(status, "; stored"...)
			}
		case res.source == fromCollapsed || res.source == fromWaited:
			status = append(status, "fwd=uri-miss; collapsed"...)
		case res.source == fromStale:
			// A negative ttl says how long ago it went stale (RFC 9211).
			simple = "STALE"
			ttl := int64(res.storedAt.Add(res.ttl).Sub(now) / time.Second)
			status = strconv.AppendInt(append(status, "hit; ttl="...), min(ttl, -1), 10)
		default:
			ttl := int64(res.storedAt.Add(res.ttl).Sub(now) / time.Second)
			status = strconv.AppendInt(append(status, "hit; ttl="...), max(ttl, 0), 10)
		}
		added[1] = string(status)
		if stored {
			added[2] = strconv.FormatInt(int64(age/time.Second), 10)
		}
	}
	added[0] = simple
	h[c.cfg.cacheHeader] = added[0:1:1]
	h[CacheStatusHeader] = added[1:2:2]
	// ageField is the response's Age: computed for a stored response,
	// the handler's own (if any) for one that was not stored.
	ageField, hasAge := added[2:3:3], stored
	values := added[4:]
	// field returns a stored header field's value slice as w may be
	// given it: a copy, if the response is shared.
	field := func(vs []string) []string {
		if !resp.shared {
			return vs
		}
		n := copy(values, vs)
		vs, values = values[:n:n], values[n:]
		return vs
	}
	if !stored {
		var v []string
		v, hasAge = resp.Header["Age"]
		ageField = field(v)
	}
	if res.shared && notModified(r, resp.Response) {
		for _, k := range notModifiedHeaders {
			if v, ok := resp.Header[k]; ok {
				h[k] = field(v)
			}
		}
		if hasAge {
			h["Age"] = ageField
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if resp.shared {
		for _, f := range resp.fields {
			if f.name != "Age" {
				h[f.name] = field(f.values)
			}
		}
	} else {
		for k, v := range resp.Header {
			if k != "Age" {
				h[k] = v
			}
		}
	}
	if hasAge {
		h["Age"] = ageField
	}
	if rg := headerValue(r.Header, "Range"); rg != "" && resp.Status == http.StatusOK && r.Method == http.MethodGet &&
		rangesBounded(rg, len(resp.Body), headerValue(resp.Header, "Content-Type")) {
		// net/http's range serving: single and multiple ranges, If-Range
		// against the stored ETag or Last-Modified, 416 when unsatisfiable.
		// Range sets it could amplify into a response larger than the
		// body get the whole 200 below instead (see rangesBounded).
		h.Del("Content-Length") // the part's, set by ServeContent
		lm, _ := http.ParseTime(headerValue(resp.Header, "Last-Modified"))
		http.ServeContent(w, r, "", lm, bytes.NewReader(resp.Body))
		return
	}
	if bodyAllowed(resp.Status) {
		added[3] = resp.length
		if !resp.shared {
			added[3] = strconv.Itoa(len(resp.Body))
		}
		h["Content-Length"] = added[3:4:4]
	}
	w.WriteHeader(resp.Status)
	if r.Method != http.MethodHead && bodyAllowed(resp.Status) {
		w.Write(resp.Body)
	}
}

// MaxRanges is the largest number of ranges one request may ask for and
// be answered with a multipart/byteranges response; a request asking for
// more gets the whole response (200). Apache's MaxRanges defaults to 200;
// clients that ask for ranges (media players, PDF readers, download
// managers) ask for a few.
const MaxRanges = 100

// rangesBounded reports whether a Range header value may be served from a
// stored body of size bytes with net/http's range serving, or must be
// ignored, which RFC 9110 (section 14.2) always allows: the client then
// gets the whole 200 response.
//
// A single range is always served (its part is at most the body). A set
// of several ranges is served only when it asks for at most [MaxRanges]
// ranges, in ascending order without overlapping, and when the multipart
// response would be no larger than the body itself: each part carries a
// boundary, a Content-Type and a Content-Range, so that many small ranges
// (60,000 overlapping one-byte ranges of a 256 KiB body, say) would turn a
// small request into a response many times the body's size, from a cache
// that may serve it to anyone, for a handler that never offered ranges.
// The whole body is then the smaller answer. A single range, or a header
// in another unit, is left to net/http (which answers 416 to what it
// cannot satisfy or parse); a set of ranges this parser finds malformed
// is ignored.
func rangesBounded(rg string, size int, contentType string) bool {
	spec, ok := strings.CutPrefix(rg, "bytes=")
	if !ok || !strings.Contains(spec, ",") {
		return true
	}
	if strings.Count(spec, ",") >= MaxRanges {
		return false // checked before parsing: a bounded parse
	}
	// Each part: CRLF "--" boundary CRLF, "Content-Type: " type CRLF,
	// "Content-Range: bytes first-last/size" CRLF, CRLF, then the bytes;
	// the end: CRLF "--" boundary "--" CRLF. mime/multipart's boundaries
	// are 60 characters; 20 digits bound any int64.
	if contentType == "" {
		contentType = "application/octet-stream; charset=utf-8" // sniffed: no longer than this
	}
	partOverhead := 2 + 2 + 60 + 2 + len("Content-Type: ") + len(contentType) + 2 +
		len("Content-Range: bytes ") + 3*20 + 2 + 2 + 2
	total, end := 2+2+60+2+2, -1 // end: the last byte of the previous range
	for r := range strings.SplitSeq(spec, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		first, last, ok := resolveRange(r, size)
		if !ok {
			// Malformed to this parser: ignored rather than left to one
			// that might read it and skip the checks below.
			return false
		}
		if first >= size {
			continue // unsatisfiable: net/http leaves it out
		}
		if first <= end {
			return false // overlapping, or not in ascending order
		}
		end = last
		total += partOverhead + last - first + 1
		if total > size {
			return false
		}
	}
	return true
}

// resolveRange resolves one byte range spec ("0-99", "100-", "-500") of a
// body of size bytes to its first and last byte, as net/http does; a
// first byte at or past size means it is unsatisfiable. ok is false for a
// malformed spec.
func resolveRange(r string, size int) (first, last int, ok bool) {
	a, b, found := strings.Cut(r, "-")
	if !found {
		return 0, 0, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" {
		// A suffix: the last n bytes.
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 || b == "" || b[0] == '-' || b[0] == '+' {
			return 0, 0, false
		}
		if n == 0 {
			// net/http makes an empty part of it, all overhead: in a
			// set of ranges it is taken as malformed.
			return 0, 0, false
		}
		return size - int(min(n, int64(size))), size - 1, true
	}
	i, err := strconv.ParseInt(a, 10, 64)
	if err != nil || i < 0 || a[0] == '+' {
		return 0, 0, false
	}
	if i >= int64(size) {
		return size, size, true
	}
	first, last = int(i), size-1
	if b != "" {
		j, err := strconv.ParseInt(b, 10, 64)
		if err != nil || j < i || b[0] == '+' || b[0] == '-' {
			return 0, 0, false
		}
		last = int(min(j, int64(size-1)))
	}
	return first, last, true
}

// acceptsEncoding reports whether the stored response with header h may
// be served to r as far as content codings go: every coding its
// Content-Encoding names other than identity must be acceptable by r's
// Accept-Encoding (RFC 9110, section 12.5.3), the stored response having
// been made for another request. A coding is acceptable when the request
// lists it (x-gzip and x-compress count as gzip and compress), or "*"
// without listing it, with a qvalue above 0.
//
// A request without Accept-Encoding accepts identity alone. RFC 9110 lets
// a server send it any coding, but such a client (curl, a health check,
// a client that decompresses nothing itself) would get bytes it cannot
// read, and Go's http.Transport, which adds gzip on its own, strips the
// coding only when it added the header itself. Caches that normalise
// Accept-Encoding treat a missing header the same way.
//
// Only the registered compression codings are checked: they are what a
// compression middleware that forgot Vary produces, and what a client
// that did not ask for them cannot read. Another value says something
// the cache cannot reason about, and is served as stored.
func acceptsEncoding(r *http.Request, h http.Header) bool {
	ce := h["Content-Encoding"]
	if len(ce) == 0 {
		return true // most responses: no parsing on the hit path
	}
	ae := r.Header["Accept-Encoding"]
	for _, v := range ce {
		for v != "" {
			var coding string
			coding, v, _ = strings.Cut(v, ",")
			coding = strings.TrimSpace(coding)
			if compression(coding) && !acceptable(ae, coding) {
				return false
			}
		}
	}
	return true
}

// acceptable reports whether the Accept-Encoding field lines ae accept
// coding (not identity): listed with a qvalue above 0 and never with 0,
// or, when not listed, "*" so.
func acceptable(ae []string, coding string) bool {
	coding = canonicalCoding(coding)
	var listed, refused, star, starRefused bool
	for _, v := range ae {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(elem, ";")
			name = strings.TrimSpace(name)
			switch {
			case name == "*":
				star = true
				starRefused = starRefused || !positiveQ(params)
			case strings.EqualFold(canonicalCoding(name), coding):
				listed = true
				refused = refused || !positiveQ(params)
			}
		}
	}
	if listed {
		return !refused
	}
	return star && !starRefused
}

// canonicalCoding maps the x- aliases RFC 9110 (section 8.4.1) makes
// equivalent to their codings.
// compression reports whether coding is a registered compression coding
// (or an alias of one).
func compression(coding string) bool {
	switch strings.ToLower(canonicalCoding(coding)) {
	case "gzip", "deflate", "br", "zstd", "compress":
		return true
	}
	return false
}

func canonicalCoding(coding string) string {
	switch {
	case strings.EqualFold(coding, "x-gzip"):
		return "gzip"
	case strings.EqualFold(coding, "x-compress"):
		return "compress"
	}
	return coding
}

// positiveQ reports whether the parameters of an Accept-Encoding element
// (";q=0.5") give it a qvalue above 0. A malformed qvalue counts as 0:
// the coding is then not served to the request, which is always safe.
func positiveQ(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		value = strings.TrimSpace(value)
		// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
		if len(value) == 0 || len(value) > 5 || (value[0] != '0' && value[0] != '1') {
			return false
		}
		if len(value) > 1 && value[1] != '.' {
			return false
		}
		positive := value[0] == '1'
		for i := 2; i < len(value); i++ {
			switch c := value[i]; {
			case c < '0' || c > '9' || (positive && c != '0'):
				return false
			case c != '0':
				positive = true
			}
		}
		return positive
	}
	return true // no qvalue: 1
}

// unsafeMethod reports whether a successful request with method changes
// the resource, so that stored responses for its URL must go.
// Methods the cache does not know (M-SEARCH, PURGE, ...) count as unsafe,
// as RFC 9111 section 4.4 asks.
func unsafeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return false
	}
	return true
}

// serveUnsafe passes an unsafe request (POST, PUT, PATCH, DELETE or an
// unknown method) through and, when the handler answers 2xx,
// invalidates the stored entries for its URL and for the same-host URLs in
// its Location and Content-Location headers, in the shared store: every
// process stops serving them (RFC 9111, section 4.4).
//
// The invalidation runs when the handler writes its status, before that
// status goes out: once a client has seen the 2xx, no request anywhere
// is served what was stored before. A handler must therefore change the
// resource before it writes its response, as handlers do.
func (rt *Middleware) serveUnsafe(w http.ResponseWriter, r *http.Request, pattern string, next func(http.ResponseWriter, *http.Request) error) error {
	rt.c.mark(w.Header(), "BYPASS", "fwd=method")
	sw := &statusWriter{ResponseWriter: rt.passWriter(w)}
	sw.beforeStatus = func(status int) {
		// Only a success says the resource changed: a redirect (a
		// router's to a clean path, a handler's after any POST) does
		// not, and would let any client wipe a page fleet-wide.
		if status >= 200 && status < 300 {
			rt.invalidateTargets(r, pattern, sw.Header())
		}
	}
	err := next(sw, r)
	if sw.status == 0 && err == nil {
		// Nothing written: net/http answers 200 once we return.
		sw.setStatus(http.StatusOK)
	}
	return err
}

// invalidateTargets invalidates what an unsafe request to r's URL, whose
// response has header h, made stale.
func (rt *Middleware) invalidateTargets(r *http.Request, pattern string, h http.Header) {
	c := rt.c
	// The entries were stored under the GET route's policy: with method
	// patterns ("POST /p/{id}") that is the "GET" pattern's.
	p := rt.policyFor(pattern)
	if rest, ok := strings.CutPrefix(pattern, r.Method+" "); ok {
		p = rt.policyFor(http.MethodGet + " " + rest)
	}
	targets := []*url.URL{r.URL}
	for _, name := range []string{"Location", "Content-Location"} {
		if v := fieldValue(h, name); v != "" {
			if u, err := r.URL.Parse(v); err == nil && (u.Host == "" || strings.EqualFold(u.Host, r.Host)) {
				targets = append(targets, u)
			}
		}
	}
	for _, u := range targets {
		target := *r
		target.URL = u
		if key, ok := p.urlKey(&target); ok {
			err := c.invalidate(r.Context(), storeKey(c.cfg.namespace, key), false)
			c.invalidated(r.Context(), InvalidatedByUnsafe, err)
		}
	}
}

// fieldValue is h.Get(name) for a response header a handler wrote, whose
// field names may be in any case: net/http sends w.Header()["location"]
// as written, so the cache must read it as Location too.
func fieldValue(h http.Header, name string) string {
	if v := headerValue(h, name); v != "" {
		return v
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) {
			return vs[0]
		}
	}
	return ""
}

// statusWriter notes the status a handler writes, and calls beforeStatus
// with it before it passes it on.
type statusWriter struct {
	http.ResponseWriter
	status       int
	beforeStatus func(status int)
}

func (w *statusWriter) setStatus(code int) {
	if w.status == 0 {
		w.status = code
		w.beforeStatus(code)
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 {
		w.setStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.setStatus(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

// Flush passes through; [http.ResponseController] finds the rest by Unwrap.
func (w *statusWriter) Flush() {
	w.setStatus(http.StatusOK)
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
