// Package core is the framework-agnostic heart of flightcache: a cache that
// fills each key once across every process sharing one Redis, and serves
// every process the same value for it.
//
// A lookup that misses joins this process's fill of the key (singleflight).
// The fill's leader tries the key's fleet-wide lock (redsync) without
// waiting; if it gets it, it looks again, runs the fetch function and
// commits the value with SET NX, so the first commit wins and a loser
// serves the stored value instead of its own. If another process holds the
// lock, the leader subscribes to the key's fill notification, looks again
// and waits to be woken (Redis pub/sub), falling back to fetching itself
// after a timeout. Every caller gets the committed value.
//
// Usage:
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
//		Addrs:                 []string{"127.0.0.1:6379"},
//		ContextTimeoutEnabled: true,
//	})
//	store := core.NewRedisStore(rdb)
//	defer store.Close()
//	c := core.New(store, core.TTL(time.Minute))
//	v, err := c.Do(ctx, "report:2026-11", func(ctx context.Context) ([]byte, time.Duration, error) {
//		b, err := buildReport(ctx) // slow: runs once per expiry fleet-wide
//		return b, 0, err            // 0: use the cache's TTL
//	})
//
// [NewMemoryStore] gives the same behaviour within one process, without
// Redis.
//
// # Writes
//
// [Cache.Purge] (a Do key) and [Cache.PurgeURL] (a URL and its variants)
// invalidate an entry in every process; an unsafe request through the
// middleware does the same for its URL. An invalidation writes a tombstone
// with random bytes in place of the entry, and a fill commits only if the
// key still holds what its own lookup read, so a fill that began before
// the invalidation cannot store what it fetched: once the purge returned,
// no request that starts later is served the old version. [Soft] keeps
// the entry, marked stale, for stale-while-revalidate.
//
// # HTTP
//
// On top of the engine, [Middleware.Serve] caches HTTP responses: it
// derives the key from the request, decides what may be stored (see
// Defaults below), records the handler's response, and replays stored
// responses with a cache header ([WithCacheHeader]: HIT, MISS, STALE or
// BYPASS), Cache-Status and Age. The adapter modules ginmw, echomw and
// nethttpmw call it; a [Middleware] carries one middleware's policy, built
// from [PolicyOption] values such as [TTL], [KeyQuery] and [PerRoute].
//
// # Defaults
//
// Every option has a default, so [New] needs only a store:
//
//   - [TTL]: one minute, when neither the response's Cache-Control nor
//     the fetch function says.
//   - [Statuses]: 200 only with the route's TTL. 203, 204, 300, 301,
//     308, 404, 405, 410, 414 and 501 are stored too when the response
//     states its own freshness; other codes only when listed.
//   - [MaxBodySize]: 1 MiB ([DefaultMaxBodySize]); a larger response
//     streams to its client and is not stored.
//   - Keys ([KeyQuery], [IgnoreQuery], [KeyHost], [KeyHeaders],
//     [KeyFunc]): scheme, Host, path and every query parameter, plus
//     X-Forwarded-Proto, -Scheme, -Port, -Prefix and -Ssl when sent;
//     no other header.
//   - Requests carrying Cookie, Forwarded, X-Forwarded-Host, X-Host,
//     X-Forwarded-Server, X-Original-Url, X-Rewrite-Url,
//     X-Http-Method-Override, X-Http-Method or X-Method-Override bypass
//     the cache unless the route keys on that header ([KeyHeaders]), as do
//     methods other than GET and HEAD, requests with a body or Upgrade,
//     and queries Go cannot parse. A request with Authorization is
//     served, and stores, only responses marked public, s-maxage or
//     must-revalidate.
//   - Responses with Set-Cookie or Vary: * are never stored, nor are
//     those a handler marks with [DoNotStore], nor those with
//     Cache-Control no-store, no-cache or private (unless a
//     Surrogate-Control max-age, addressed to caches like this one,
//     overrides it). The hop-by-hop fields (Connection, Keep-Alive,
//     Proxy-Authenticate, Proxy-Authorization, Proxy-Connection, Te,
//     Trailer, Transfer-Encoding, Upgrade), Cache-Status and the cache
//     header are not stored with a response. Response header names are
//     read case-insensitively (names set directly in the header map in
//     another case are canonicalised and merged before any rule applies).
//   - A response with a Content-Encoding other than identity is stored
//     as varying on Accept-Encoding, and served only to requests whose
//     Accept-Encoding accepts its coding; a request without
//     Accept-Encoding accepts identity alone. Variants are keyed on the
//     varying headers' field lines exactly as sent.
//   - A Range request is served from a stored 200, except a set of
//     ranges that overlap, are out of order, number more than
//     [MaxRanges] or would make a multipart response larger than the
//     body: that gets the whole 200.
//   - [NoCache], [Skip], [MaxKeys], [IgnoreCacheControl],
//     [ExplicitFreshnessOnly], [PerRoute]: off.
//   - [StaleWhileRevalidate] and [StaleIfError]: 0, unless the response
//     sets its own window.
//   - [EarlyRefresh]: off. With it, a hit within beta times the entry's
//     measured fetch time plus 100 ms of its expiry (never in the first
//     half of its lifetime) is served, then refills the entry in the
//     background through the usual fill path (one per process, the lock
//     across the fleet, a commit fenced on the bytes it replaces): one
//     origin call per entry for the fleet, and a purge during the refresh
//     wins. A key whose requests are too sparse for that window gets a
//     wider one in the HTTP layer, whose hits hold until the refresh is due.
//     [TTLJitter]: 0; it only ever shortens lifetimes.
//   - [WithNamespace]: "flightcache". [WithCacheHeader]: "X-Cache".
//   - Tags ([Cache.PurgeTags]): read from the response header
//     Surrogate-Key ([WithTagHeader]), which is removed from what clients
//     get ([KeepTagHeader] keeps it); none derived from the request
//     ([Tags]). At most [MaxTags] tags of at most [MaxTagLength] bytes;
//     a response past that is not stored.
//   - [WithObserver], [WithEvents], [WithLogger]: none; [Stats.Errors]
//     still counts.
//   - [WithLockExpiry]: 1.5 s ([DefaultLockExpiry]), a lease the filler
//     renews every 0.3 s while it fills, so a dead filler's waiters take
//     over within about 1.75 s. [WithWaitTimeout]: 10 s. [WithFetchTimeout]:
//     30 s. [WithStoreTimeout]: 250 ms. [WithPollInterval]: 250 ms.
//   - Fill lock: on ([WithoutLock] turns it off); with [NewRedisStore],
//     on the store's own client ([WithLockNodes] for a Redlock quorum).
//   - Circuit breaker ([WithBreaker]): on, opening after 5 store errors in
//     a row for 1 s ([WithoutBreaker] turns it off).
//   - [WithLocalTier]: no local tier.
//   - [NewMemoryStore] with 0: 64 MiB ([DefaultMemoryBytes]).
//
// # Failure behaviour
//
// The cache fails open. When Redis is unreachable, slow beyond
// [WithStoreTimeout], or holds an entry that does not decode, the caller
// still gets a value: fetched from the origin and returned uncached. The
// cause goes to the [Observer] and [Stats.Errors], never to the caller.
// A lost or expired lock never aborts a fill; it may let a second process
// fetch, and SET NX still makes every caller get the first committed value.
// The origin's own errors and panics reach every caller of that fill,
// unchanged, and nothing is cached.
//
// # Observability
//
// [WithEvents] calls the functions of an [Events] as the cache works: per
// HTTP request (how it was served, by route pattern), per fill (lock,
// wait, fetch, commit), and for errors, breaker changes, local-tier
// evictions and invalidations. Unset functions cost nothing. The module
// github.com/flightcache/flightcache/flightotel turns them into
// OpenTelemetry metrics and spans. [WithLogger] logs absorbed errors,
// rate-limited, and breaker changes; [Stats.Snapshot] copies the counters.
package core
