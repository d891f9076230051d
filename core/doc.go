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
// # HTTP
//
// On top of the engine, [Middleware.Serve] caches HTTP responses: it derives the
// key from the request, decides what may be stored (see the README's list of
// defaults), records the handler's response, and replays stored responses
// with an X-Cache header and Age. The adapter modules ginmw, echomw and
// nethttpmw call it; a [Middleware] carries one middleware's policy, built from
// [PolicyOption] values such as [TTL], [KeyQuery] and [PerRoute].
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
package core
