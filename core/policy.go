package core

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// policy is what a route decides: whether, how long and under which key
// to cache its responses.
type policy struct {
	ttl                time.Duration
	noCache            bool
	statuses           []int
	maxBody            int
	queryKeys          []string // nil: every parameter is part of the key
	ignoreQuery        []string
	headerKeys         []string // canonical request header names in the key
	credentialHeaders  []string // canonical request header names treated like Authorization
	fixedHost          bool     // key on host instead of the request's Host
	host               string   // lower case; "" with fixedHost: no host in the key
	keyFunc            func(*http.Request) string
	skip               func(*http.Request) bool
	ignoreCacheControl bool
	explicitOnly       bool
	maxKeys            int // 0: no limit
	// staleWhileRevalidate is how long past its freshness a response
	// may be served while one request refreshes it, when the response
	// does not say.
	staleWhileRevalidate time.Duration
	// staleIfError is how long past its freshness a response may be
	// served when refilling it fails, when the response does not say.
	staleIfError time.Duration
	// earlyRefresh is the EarlyRefresh factor; 0: off.
	earlyRefresh float64
	// ttlJitter is the TTLJitter fraction; 0: none.
	ttlJitter float64
	table     map[string][]PolicyOption
	// tags derive tags from the request, added to the response's own.
	tags []func(*http.Request) []string
}

// DefaultMaxBodySize is the largest response body stored by default.
const DefaultMaxBodySize = 1 << 20

func defaultPolicy() policy {
	return policy{ttl: time.Minute, statuses: []int{http.StatusOK}, maxBody: DefaultMaxBodySize}
}

// TTL sets how long a response (or a value from [Cache.Do]) stays fresh
// when the handler's Cache-Control or the fetch function does not say.
// The default is one minute.
func TTL(d time.Duration) PolicyOption {
	positive("TTL", d)
	return policyOptionFunc(func(p *policy) { p.ttl = d })
}

// Tags tags the route's stored responses with the tags f returns for the
// request, in addition to those of the response's tag header
// ([WithTagHeader]), so that [Cache.PurgeTags] on any of them purges
// them. f runs once per fill, with the request that leads it. Tags
// options add up: given to [New] and to a route, the route's responses
// carry the tags of both. The bounds of [WithTagHeader] apply to the
// tags of both sources together; a response whose request-derived tags
// put it past them goes to its own request, unstored, without marking
// the URL uncacheable. Derive tags only from what the route's key
// includes (the path, keyed query parameters and headers): the tags of a
// stored response are those of the request that filled it, and every
// request with the same key is served it.
func Tags(f func(r *http.Request) []string) PolicyOption {
	if f == nil {
		panic("flightcache: Tags: nil function")
	}
	return policyOptionFunc(func(p *policy) { p.tags = append(p.tags[:len(p.tags):len(p.tags)], f) })
}

// NoCache turns caching off for the route: requests pass straight through,
// marked BYPASS.
func NoCache() PolicyOption {
	return policyOptionFunc(func(p *policy) { p.noCache = true })
}

// Statuses sets which response status codes may be stored with the
// route's [TTL]. The default is 200 only. Whatever the list, a response
// with one of the codes RFC 9110 lets a cache store by default (200, 203,
// 204, 300, 301, 308, 404, 405, 410, 414 and 501) is also stored when it
// states its own freshness (Cache-Control s-maxage or max-age, or
// Expires); other codes, such as 206 or a 5xx, are stored only when
// listed here.
func Statuses(codes ...int) PolicyOption {
	for _, c := range codes {
		if c < 100 || c > 999 {
			panic(fmt.Sprintf("flightcache: Statuses: invalid status %d", c))
		}
	}
	codes = slices.Clone(codes)
	return policyOptionFunc(func(p *policy) { p.statuses = codes })
}

// MaxBodySize sets the largest response body that is stored, in bytes; a
// larger response streams through to its client uncached. The default is
// [DefaultMaxBodySize] (1 MiB).
func MaxBodySize(n int) PolicyOption {
	if n <= 0 {
		panic(fmt.Sprintf("flightcache: MaxBodySize(%d): must be positive", n))
	}
	return policyOptionFunc(func(p *policy) { p.maxBody = n })
}

// KeyQuery makes only the named query parameters part of the cache key;
// others are ignored. By default every parameter is part of the key.
func KeyQuery(names ...string) PolicyOption {
	names = slices.Clone(names)
	return policyOptionFunc(func(p *policy) { p.queryKeys = names })
}

// IgnoreQuery leaves the named query parameters (tracking tags, say) out
// of the cache key.
func IgnoreQuery(names ...string) PolicyOption {
	names = slices.Clone(names)
	return policyOptionFunc(func(p *policy) { p.ignoreQuery = names })
}

// KeyHeaders makes the named request headers part of the cache key, so
// responses that depend on them are stored per value. Names are matched
// case-insensitively. The default is none.
//
// Some request headers make a request bypass the cache unless the route
// names them here: Cookie, whose responses are personal, and the headers
// that can override the host, URL or method a handler sees, which an
// attacker would send to have a response built from them stored for
// everyone: Forwarded, X-Forwarded-Host, X-Host, X-Forwarded-Server,
// X-Original-Url, X-Rewrite-Url, X-Http-Method-Override, X-Http-Method and
// X-Method-Override. Naming one of them keys on it instead: the request is
// cached, per value. Behind a proxy that sets Forwarded on every request,
// key on it or strip it before the cache. Naming Authorization caches one
// entry per credential; without it a request with Authorization is served
// from, and fills, the cache only with responses that say they may be
// shared (public, s-maxage or must-revalidate).
//
// X-Forwarded-Proto, X-Forwarded-Scheme, X-Forwarded-Port,
// X-Forwarded-Prefix and X-Forwarded-Ssl are always part of the key, named
// or not: a proxy in front sets them alike for every client, so its
// requests still share entries, while a client that forges one only
// reaches an entry of its own.
func KeyHeaders(names ...string) PolicyOption {
	canon := make([]string, len(names))
	for i, n := range names {
		canon[i] = http.CanonicalHeaderKey(n)
	}
	slices.Sort(canon)
	return policyOptionFunc(func(p *policy) { p.headerKeys = canon })
}

// CredentialHeaders names request headers that carry credentials, such as
// an API key in X-Api-Key, to be treated like Authorization: a request
// that sends one (and whose route does not key on it with [KeyHeaders])
// is served only stored responses that say they may be shared with
// authenticated requests (public, s-maxage or must-revalidate), and its
// own response is stored only when it says so too; otherwise it goes to
// the handler, uncached, and waiters on its fill run their own. Without
// it, a custom credential header is just another header: an API that
// answers each customer under one URL, without Vary or Cache-Control,
// would have one customer's response served to the next.
func CredentialHeaders(names ...string) PolicyOption {
	canon := make([]string, len(names))
	for i, n := range names {
		canon[i] = http.CanonicalHeaderKey(n)
	}
	return policyOptionFunc(func(p *policy) { p.credentialHeaders = canon })
}

// KeyHost sets the host part of the cache key, which is otherwise the
// request's Host header, lower-cased. With a host name, such as the site's
// public one, instances reached under different names (a load balancer's,
// their own addresses) share entries. With "", the host is left out of the
// key: every host the route is served under shares one entry per path and
// query. The scheme, path and query stay in the key ([KeyQuery] and
// [IgnoreQuery] apply as usual); [KeyFunc], which replaces all of them,
// makes KeyHost moot.
//
// Requests for other hosts are then served entries filled for this one,
// so use it only when the handler's response does not depend on the Host
// it was asked for (absolute links built from r.Host, say), or when the
// server in front only passes the hosts the route answers to. The default
// is the request's Host.
func KeyHost(host string) PolicyOption {
	host = strings.ToLower(host)
	return policyOptionFunc(func(p *policy) { p.fixedHost, p.host = true, host })
}

// KeyFunc replaces the method, host, path and query part of the cache key
// with f(r). Headers named by [KeyHeaders], and the forwarding headers
// that are always keyed (see KeyHeaders), are still added.
func KeyFunc(f func(r *http.Request) string) PolicyOption {
	return policyOptionFunc(func(p *policy) { p.keyFunc = f })
}

// Skip makes requests for which f returns true pass through uncached.
func Skip(f func(r *http.Request) bool) PolicyOption {
	return policyOptionFunc(func(p *policy) { p.skip = f })
}

// IgnoreCacheControl makes the route's [TTL] apply even when the handler
// sets s-maxage or max-age. Responses marked no-store, no-cache or private
// are still never stored.
func IgnoreCacheControl() PolicyOption {
	return policyOptionFunc(func(p *policy) { p.ignoreCacheControl = true })
}

// ExplicitFreshnessOnly stores only responses that state their own
// freshness (Cache-Control s-maxage or max-age, or Expires); the route's
// [TTL] is never invented for one that does not. A generic caching proxy
// in front of someone else's upstream wants this; an application caching
// its own handlers usually does not.
func ExplicitFreshnessOnly() PolicyOption {
	return policyOptionFunc(func(p *policy) { p.explicitOnly = true })
}

// StaleWhileRevalidate lets a response be served for up to d past its
// freshness while it is refreshed, when the response does not say itself
// (its own Cache-Control stale-while-revalidate=N always counts, RFC
// 5861). Once an entry is stale, one request per process tries to
// refresh it and waits for the handler; every other request, in every
// process, is answered at once from the stale entry (X-Cache STALE,
// Cache-Status "hit; ttl=" negative). If the refresh fails, its request
// is served the stale entry too. Responses with must-revalidate,
// proxy-revalidate, no-cache or s-maxage are never served stale by this
// default. The default is 0: a stale entry is a miss.
func StaleWhileRevalidate(d time.Duration) PolicyOption {
	if d < 0 {
		panic(fmt.Sprintf("flightcache: StaleWhileRevalidate(%v): must not be negative", d))
	}
	return policyOptionFunc(func(p *policy) { p.staleWhileRevalidate = d })
}

// StaleIfError lets a stored response be served for up to d past its
// freshness when the request that refills it fails, when the response
// does not say itself (its own Cache-Control stale-if-error=N always
// counts, RFC 5861). A refill fails when the handler returns an error
// (an echo handler's error, or the error of the next function given to
// [Middleware.Serve]) or answers 500, 502, 503 or 504; then that request
// and every request waiting on the same fill get the stale response
// (X-Cache STALE), nothing is stored, and the next request past the fill
// tries the origin again. A panic is not served stale: it reaches its own
// request, and the waiting requests look again.
// Responses with must-revalidate, proxy-revalidate, no-cache or s-maxage
// are never served stale by this default. The default is 0: a failed
// refill's response goes to its requests.
func StaleIfError(d time.Duration) PolicyOption {
	if d < 0 {
		panic(fmt.Sprintf("flightcache: StaleIfError(%v): must not be negative", d))
	}
	return policyOptionFunc(func(p *policy) { p.staleIfError = d })
}

// EarlyRefresh refreshes hot entries before they expire, so that under
// steady traffic no request waits for the origin when one does. A hit
// in the last part of an entry's freshness (its refresh window) is
// served as usual, and then refills the entry in the background: through
// the same one-fill-at-a-time path as a miss (one fill per process, the
// key's lock across the fleet), committed in place of the entry it was
// served. The window is beta times the time the entry's own fetch took
// (measured by the fill and stored with the entry) plus 100 ms, and at
// most the second half of the entry's freshness: with beta 2 and a
// 200 ms origin, the last 500 ms.
//
// At most one early refresh per entry calls the origin, across every
// process: the others find the lock taken, or the entry already
// replaced. No request can set one off outside the window or more often,
// whatever it sends; requests with credentials never do. A purge or
// invalidation that lands while a refresh runs wins: the refresh's
// commit is refused (see [Cache.Purge]). Each key so refreshed costs
// somewhat more than one origin call per lifetime (2 s / (2 s - 500 ms)
// = 1.33 with the numbers above), and a refresh whose response may not
// be stored changes nothing: the entry is served until it expires.
//
// A key whose requests are sparse may see none in that window, and then
// expire with the next request waiting: the HTTP layer keeps, per key
// and process, the average time between its GET requests, and when the
// window would hold fewer than 8 of them, a hit in a wider window (8
// average gaps, at most the second half of the freshness, and at most
// [WithFetchTimeout] more than the window) is served and then holds until
// a hit in the window would have set a hot key's refresh off, or at the
// latest until the entry's fetch time plus 100 ms before expiry, and
// refreshes then: no earlier than a hot key, so with no more origin
// calls. One hit per key and process holds at a
// time, and at most 256 in a process. A refresh still running when the
// entry expires does not keep it servable: that is what
// [StaleWhileRevalidate] is for, and it composes with early refresh.
//
// In the HTTP layer the refresh runs the handler after the hit's
// response has been written and flushed, before the middleware returns
// (the handler chain belongs to the request): the request's connection
// is closed after it (Connection: close, on HTTP/1), so that its client's
// next request does not queue behind the refresh. Entries are kept in
// the store up to one more lifetime past their freshness (at most the
// fill span), for a refresh that overruns it; they are not served then.
// Entries written with early refresh on carry the fetch time, 4 bytes,
// which caches of versions before it read as a miss. With [Cache.Do],
// the refresh runs on a goroutine of its own, bounded by
// [WithFetchTimeout].
//
// beta must be positive; the default is no early refresh. [NoEarlyRefresh]
// turns it off for a route.
func EarlyRefresh(beta float64) PolicyOption {
	if !(beta > 0) || beta > 1e6 {
		panic(fmt.Sprintf("flightcache: EarlyRefresh(%v): must be positive", beta))
	}
	return policyOptionFunc(func(p *policy) { p.earlyRefresh = beta })
}

// NoEarlyRefresh turns [EarlyRefresh] off for a route.
func NoEarlyRefresh() PolicyOption {
	return policyOptionFunc(func(p *policy) { p.earlyRefresh = 0 })
}

// TTLJitter shortens the freshness lifetime of each stored value by a
// random part of up to fraction of it, so that keys filled together (a
// cold start, a purge of many keys) do not all expire, and refill,
// together. It only ever shortens: a response is never kept fresh longer
// than its Cache-Control (or the route's [TTL]) allows. With fraction
// 0.1, a 60 s lifetime becomes 54 to 60 s. fraction must be at least 0
// and below 1; the default is 0, no jitter.
func TTLJitter(fraction float64) PolicyOption {
	if !(fraction >= 0 && fraction < 1) {
		panic(fmt.Sprintf("flightcache: TTLJitter(%v): must be at least 0 and below 1", fraction))
	}
	return policyOptionFunc(func(p *policy) { p.ttlJitter = fraction })
}

// PerRoute gives route patterns their own policy, read by one middleware for
// all routes. Keys are the framework's patterns: gin's FullPath
// ("/products/:id"), echo's Path, net/http's Request.Pattern
// ("GET /products/{id}"). A key ending in "*" matches every pattern that
// starts with the rest of it, so "/admin/*" covers the admin routes; an
// exact key wins over a prefix, and a longer prefix over a shorter one.
// A route's options apply on top of the middleware's.
func PerRoute(table map[string][]PolicyOption) PolicyOption {
	for pattern, opts := range table {
		for _, o := range opts {
			probe := policy{}
			o.route(&probe)
			if probe.table != nil {
				panic(fmt.Sprintf("flightcache: PerRoute: the entry for %q nests PerRoute", pattern))
			}
		}
	}
	return policyOptionFunc(func(p *policy) { p.table = table })
}

// Middleware is one middleware's compiled policy, with its per-pattern table.
// Adapters create one per middleware with [Cache.Middleware] and call
// [Middleware.Serve] for each request. It is safe for concurrent use.
type Middleware struct {
	c        *Cache
	base     policy
	exact    map[string]*policy
	prefixes []prefixPolicy // longest prefix first
	limits   sync.Map       // pattern → *keyLimiter, for routes with MaxKeys
}

type prefixPolicy struct {
	prefix string
	p      *policy
}

// Middleware compiles the cache's default policy with opts applied on top.
func (c *Cache) Middleware(opts ...PolicyOption) *Middleware {
	base := c.cfg.policy
	for _, o := range opts {
		o.route(&base)
	}
	rt := &Middleware{c: c, base: base, exact: map[string]*policy{}}
	for pattern, opts := range base.table {
		p := base
		p.table = nil
		for _, o := range opts {
			o.route(&p)
		}
		if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
			rt.prefixes = append(rt.prefixes, prefixPolicy{prefix, &p})
		} else {
			rt.exact[pattern] = &p
		}
	}
	slices.SortFunc(rt.prefixes, func(a, b prefixPolicy) int { return len(b.prefix) - len(a.prefix) })
	rt.base.table = nil
	return rt
}

// policyFor returns the policy of a route pattern.
func (rt *Middleware) policyFor(pattern string) *policy {
	if p, ok := rt.exact[pattern]; ok {
		return p
	}
	for _, pp := range rt.prefixes {
		if strings.HasPrefix(pattern, pp.prefix) {
			return pp.p
		}
	}
	return &rt.base
}
