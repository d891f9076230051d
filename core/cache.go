package core

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// Serve answers r through the cache under the policy of the route
// pattern (see [Routes]; "" for none). A cacheable request is answered
// from the store or, on a miss, by next, run once per key across the fleet
// while the other requests for the key wait; next writes into a recorder,
// not into w, and the response is stored if it may be shared. A request
// that may not be cached, or a response that may not be shared, goes to
// next with w itself.
//
// next is the rest of the handler chain. The request it gets carries a
// context detached from r's (bounded by [WithFetchTimeout]) so that a
// client leaving does not cancel a fill other requests wait for. An error
// it returns is returned by Serve, to this request and every request
// waiting on the same fill, and nothing is stored. Serve itself returns
// no other errors: store failures are absorbed (see [Cache.Do]), and when
// r's context ends while it waits for another request's fill it returns
// nil without writing, the client being gone.
//
// Every response carries the cache header ([WithCacheHeader]): HIT when it
// came from the store or another request's fill, MISS when this request
// filled it, BYPASS when it was not cached. Stored responses carry Age.
func (rt *Route) Serve(w http.ResponseWriter, r *http.Request, pattern string, next func(http.ResponseWriter, *http.Request) error) error {
	c := rt.c
	p := rt.policyFor(pattern)
	key, ok := p.requestKey(r)
	if !ok {
		w.Header().Set(c.cfg.cacheHeader, "BYPASS")
		return next(w, r)
	}
	key = storeKey(c.cfg.namespace, key)

	if r.Method == http.MethodHead {
		// HEAD is answered from a stored GET, but never fills one: a
		// handler's HEAD response may lack the body a GET needs.
		if res, ok := c.lookup(r.Context(), key); ok {
			c.stats.Hits.Add(1)
			if resp, err := entry.DecodeResponse(res.value); err == nil {
				c.replay(w, r, resp, res)
				return nil
			}
		}
		w.Header().Set(c.cfg.cacheHeader, "BYPASS")
		return next(w, r)
	}

	// wrote is set when the response already went to w: streamed by this
	// request's own fill, or served by next directly. The fill's write
	// happens before load returns (singleflight's channel orders it).
	var wrote bool
	res, err := c.load(r.Context(), key, flight{
		bound: true,
		fetch: func(ctx context.Context) ([]byte, time.Duration, error) {
			// Once the response streams, it belongs to this one client
			// again: the recorder then ties the handler's context back
			// to the client's, so a stream ends when its client leaves.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			rec := newRecorder(w, c.cfg.cacheHeader, p.maxBody)
			rec.onStream = func() { context.AfterFunc(r.Context(), cancel) }
			err := next(rec, r.WithContext(ctx))
			if rec.streamed {
				wrote = true
				return nil, NoStore, err
			}
			if err != nil {
				return nil, 0, err
			}
			resp := rec.response()
			enc := entry.EncodeResponse(resp)
			ttl, ok := p.storable(resp)
			if !ok {
				return enc, NoStore, nil
			}
			return enc, ttl, nil
		},
		alone: func(context.Context) (result, error) {
			wrote = true
			w.Header().Set(c.cfg.cacheHeader, "BYPASS")
			return result{}, next(w, r)
		},
	})
	switch {
	case err != nil && r.Context().Err() != nil && errors.Is(err, r.Context().Err()):
		return nil // the client is gone
	case err != nil, wrote:
		return err
	}
	resp, err := entry.DecodeResponse(res.value)
	if err != nil {
		c.report(r.Context(), "decode", key, err)
		w.Header().Set(c.cfg.cacheHeader, "BYPASS")
		return next(w, r)
	}
	c.replay(w, r, resp, res)
	return nil
}

// replay writes a stored response to w. resp is this request's own copy:
// its header map is fresh from decoding, its body is only read.
func (c *Cache) replay(w http.ResponseWriter, r *http.Request, resp entry.Response, res result) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	switch {
	case res.source == fromFill && !res.shared:
		h.Set(c.cfg.cacheHeader, "BYPASS")
	case res.source == fromFill:
		h.Set(c.cfg.cacheHeader, "MISS")
	default:
		h.Set(c.cfg.cacheHeader, "HIT")
	}
	if !res.storedAt.IsZero() {
		h.Set("Age", strconv.FormatInt(int64(max(0, time.Since(res.storedAt)/time.Second)), 10))
	}
	if bodyAllowed(resp.Status) {
		h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	}
	w.WriteHeader(resp.Status)
	if r.Method != http.MethodHead && bodyAllowed(resp.Status) {
		w.Write(resp.Body)
	}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// requestKey returns r's cache key under p, or false when r must bypass
// the cache. The key frames every part with its length, so no choice of
// path, parameter or header bytes can make two different requests' keys
// equal.
func (p *policy) requestKey(r *http.Request) (string, bool) {
	if p.noCache || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return "", false
	}
	if p.skip != nil && p.skip(r) {
		return "", false
	}
	if r.Header.Get("Range") != "" || r.Header.Get("Upgrade") != "" {
		return "", false
	}
	for _, credential := range []string{"Authorization", "Cookie"} {
		if _, ok := r.Header[credential]; ok && !slices.Contains(p.headerKeys, credential) {
			return "", false
		}
	}
	b := make([]byte, 0, 128)
	b = appendField(b, "http1")
	b = appendField(b, http.MethodGet) // HEAD shares GET's entry
	if p.keyFunc != nil {
		b = appendField(b, "func")
		b = appendField(b, p.keyFunc(r))
	} else {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		b = appendField(b, scheme)
		b = appendField(b, strings.ToLower(r.Host))
		b = appendField(b, r.URL.EscapedPath())
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "", false // a query the handler may read differently than we do
		}
		names := make([]string, 0, len(q))
		for name := range q {
			if (p.queryKeys == nil || slices.Contains(p.queryKeys, name)) && !slices.Contains(p.ignoreQuery, name) {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		b = appendCount(b, len(names))
		for _, name := range names {
			b = appendField(b, name)
			b = appendCount(b, len(q[name]))
			for _, v := range q[name] {
				b = appendField(b, v)
			}
		}
	}
	for _, name := range p.headerKeys {
		vs := r.Header.Values(name)
		b = appendField(b, name)
		b = appendCount(b, len(vs))
		for _, v := range vs {
			b = appendField(b, v)
		}
	}
	return string(b), true
}

func appendCount(b []byte, n int) []byte {
	return strconv.AppendInt(append(b, '#'), int64(n), 10)
}

func appendField(b []byte, s string) []byte {
	b = appendCount(b, len(s))
	return append(append(b, ':'), s...)
}

// storable decides whether a recorded response may be stored and shared,
// and for how long.
func (p *policy) storable(resp entry.Response) (time.Duration, bool) {
	if !slices.Contains(p.statuses, resp.Status) {
		return 0, false
	}
	if _, ok := resp.Header["Set-Cookie"]; ok {
		return 0, false
	}
	for _, v := range resp.Header.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name == "*" || (name != "" && !slices.Contains(p.headerKeys, name)) {
				return 0, false // the response depends on a header the key ignores
			}
		}
	}
	ttl := p.ttl
	maxAge, sMaxAge := -1, -1
	for _, v := range resp.Header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache", "private":
				return 0, false
			case "max-age":
				maxAge = seconds(arg)
			case "s-maxage":
				sMaxAge = seconds(arg)
			}
		}
	}
	if sMaxAge < 0 {
		sMaxAge = maxAge
	}
	switch {
	case sMaxAge == 0:
		return 0, false
	case sMaxAge > 0 && !p.ignoreCacheControl:
		ttl = time.Duration(sMaxAge) * time.Second
	}
	return ttl, true
}

// seconds parses a delta-seconds directive argument; -1 if malformed.
func seconds(arg string) int {
	n, err := strconv.Atoi(strings.Trim(arg, `"`))
	if err != nil || n < 0 {
		return -1
	}
	return min(n, 365*24*3600)
}
