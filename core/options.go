package core

import (
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"
)

// Option configures a [Cache]; it is accepted by [New] only.
type Option interface {
	apply(*config)
}

// PolicyOption configures the caching policy of a route. Given to [New] it
// sets the default for every route; given to an adapter it applies to the
// routes that adapter wraps.
type PolicyOption interface {
	Option
	route(*policy)
}

// Observer receives every error the cache absorbed while failing open: an
// unreachable store, a lost lock, an undecodable entry. Each is an [*Error].
// It is called synchronously on the request path, so it must be quick and
// safe for concurrent use.
type Observer func(err error)

// config is the cache-wide configuration; New applies defaults, then options.
type config struct {
	policy       policy
	namespace    string
	observer     Observer
	lockExpiry   time.Duration
	waitTimeout  time.Duration
	fetchTimeout time.Duration
	storeTimeout time.Duration
	pollInterval time.Duration
	noLock       bool
	cacheHeader  string
	// tagHeader is the response header tags are read from; keepTagHeader
	// sends it on to clients instead of removing it.
	tagHeader     string
	keepTagHeader bool

	breakerFailures int // 0: no breaker
	breakerCooldown time.Duration

	localTierBytes int64 // 0: no local tier

	events Events       // see WithEvents
	logger *slog.Logger // see WithLogger
}

func defaultConfig() config {
	return config{
		policy:       defaultPolicy(),
		namespace:    "flightcache",
		lockExpiry:   DefaultLockExpiry,
		waitTimeout:  10 * time.Second,
		fetchTimeout: 30 * time.Second,
		storeTimeout: 250 * time.Millisecond,
		pollInterval: 250 * time.Millisecond,
		cacheHeader:  "X-Cache",
		tagHeader:    "Surrogate-Key",

		breakerFailures: 5,
		breakerCooldown: time.Second,
	}
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type policyOptionFunc func(*policy)

func (f policyOptionFunc) apply(c *config) { f(&c.policy) }
func (f policyOptionFunc) route(p *policy) { f(p) }

func positive(name string, d time.Duration) {
	if d <= 0 {
		panic(fmt.Sprintf("flightcache: %s(%v): must be positive", name, d))
	}
}

// namespacePattern leaves out braces, so that the hash tag storeKey puts
// after the namespace is the key's first one (Redis Cluster hashes the
// first {…} only), and the glob characters of the store's pattern
// subscriptions.
var namespacePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// WithNamespace sets the prefix of every key the cache writes, so that
// several applications can share one Redis: a value lives at
// "<namespace>:{<hash of the key>}". It must be 1 to 64 characters from
// [A-Za-z0-9_.:-], so "myapp:cache" is fine; braces are refused because
// they would change the Redis Cluster hash slot. The default is
// "flightcache": give every service its own namespace, or two services
// behind one host name that share a Redis serve each other's responses
// (the key is the URL, not the service).
func WithNamespace(ns string) Option {
	if !namespacePattern.MatchString(ns) {
		panic(fmt.Sprintf("flightcache: WithNamespace(%q): want 1 to 64 characters from [A-Za-z0-9_.:-]", ns))
	}
	return optionFunc(func(c *config) { c.namespace = ns })
}

// WithObserver sets the function that receives errors the cache absorbed.
// The default discards them; [Cache.Stats] still counts them.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) { c.observer = o })
}

// DefaultLockExpiry is the fill lock's default lease ([WithLockExpiry]).
const DefaultLockExpiry = 1500 * time.Millisecond

// WithLockExpiry sets how long a fill lock lives without being extended:
// a lease, which the filler renews every fifth of it while it fills
// (a heartbeat), however long the fetch takes. The expiry only bounds how
// long a filler that died (a crash, a SIGKILL, a partition) keeps others
// waiting: they take over within the expiry plus one poll interval
// ([WithPollInterval]). A shorter one takes over sooner; one too short
// for the store's latency lets a heartbeat arrive late and a second
// filler start (the first commit still decides the value). The default
// is [DefaultLockExpiry], 1.5 seconds: a takeover within 1.75 s.
func WithLockExpiry(d time.Duration) Option {
	positive("WithLockExpiry", d)
	return optionFunc(func(c *config) { c.lockExpiry = d })
}

// WithWaitTimeout bounds how long a request waits for a fill running in
// another process before it fetches the value itself; the first commit
// still decides the value everyone is served. The default is 10 seconds.
func WithWaitTimeout(d time.Duration) Option {
	positive("WithWaitTimeout", d)
	return optionFunc(func(c *config) { c.waitTimeout = d })
}

// WithFetchTimeout bounds one run of the fetch function. The fetch runs on
// a context detached from the request that started it, so that request
// leaving does not cancel a fill others are waiting for; this timeout is
// what stops it. The default is 30 seconds.
func WithFetchTimeout(d time.Duration) Option {
	positive("WithFetchTimeout", d)
	return optionFunc(func(c *config) { c.fetchTimeout = d })
}

// WithStoreTimeout bounds every single store call (a Redis round trip).
// For a Redis client it takes effect only with the go-redis option
// ContextTimeoutEnabled set; otherwise the client's own read and write
// timeouts apply. The lookup of a hit passes the bound as the context's
// deadline without arming a timer, which would cost more than a cache hit:
// a [Store] sees it in ctx.Deadline, while ctx.Done may never close. The
// default is 250 milliseconds.
func WithStoreTimeout(d time.Duration) Option {
	positive("WithStoreTimeout", d)
	return optionFunc(func(c *config) { c.storeTimeout = d })
}

// WithPollInterval sets how often a request waiting on another process's
// fill looks at the store and retries the lock even without a notification.
// Notifications normally wake waiters at once; polling covers a lost
// notification or a crashed filler. The default is 250 milliseconds.
func WithPollInterval(d time.Duration) Option {
	positive("WithPollInterval", d)
	return optionFunc(func(c *config) { c.pollInterval = d })
}

// WithoutLock turns the fill lock off: every process that misses fetches on
// its own (still once per process, through singleflight) and the first
// commit wins. Use it when the store cannot hold locks or for comparison.
func WithoutLock() Option {
	return optionFunc(func(c *config) { c.noLock = true })
}

// WithCacheHeader sets the name of the response header that says how the
// cache served a request: HIT (from the store, or from another request's
// fill), MISS (this request filled it), STALE (a stale entry, served while
// it is refreshed or because its refill failed) or BYPASS (not cached).
// The default is "X-Cache".
func WithCacheHeader(name string) Option {
	if name == "" || http.CanonicalHeaderKey(name) == "" {
		panic("flightcache: WithCacheHeader: empty name")
	}
	return optionFunc(func(c *config) { c.cacheHeader = http.CanonicalHeaderKey(name) })
}

// WithTagHeader sets the response header the HTTP layer reads a
// response's tags (surrogate keys) from: space-separated tags, on one or
// several header lines, which [Cache.PurgeTags] purges by. The header is
// removed from every response sent to clients, unless [KeepTagHeader] is
// given. A response carrying more than [MaxTags] distinct tags (counting
// those from [Tags]), or a tag longer than [MaxTagLength] bytes or not
// printable ASCII, is sent to its own request and not stored, because a
// purge could not be relied on to reach it; it is marked BYPASS, with
// detail=tags in Cache-Status. The default is "Surrogate-Key", the
// convention of Fastly and Souin.
func WithTagHeader(name string) Option {
	if name == "" || http.CanonicalHeaderKey(name) == "" {
		panic("flightcache: WithTagHeader: empty name")
	}
	return optionFunc(func(c *config) { c.tagHeader = http.CanonicalHeaderKey(name) })
}

// KeepTagHeader sends the tag header ([WithTagHeader]) on to clients, and
// stores it with the response, instead of removing it: for a cache or CDN
// in front of this one that purges by the same tags. The default is to
// remove it.
func KeepTagHeader() Option {
	return optionFunc(func(c *config) { c.keepTagHeader = true })
}

// WithBreaker sets the store circuit breaker: after failures store errors
// in a row it opens, and for cooldown every store call fails at once (the
// cache serves from the origin, uncached) instead of waiting out the store
// timeout; then a single probe call decides whether to close it again.
// State changes are reported to the [Observer]. The default is 5 failures
// and 1 second.
func WithBreaker(failures int, cooldown time.Duration) Option {
	if failures <= 0 {
		panic(fmt.Sprintf("flightcache: WithBreaker(%d, ...): failures must be positive", failures))
	}
	positive("WithBreaker", cooldown)
	return optionFunc(func(c *config) { c.breakerFailures, c.breakerCooldown = failures, cooldown })
}

// WithoutBreaker turns the store circuit breaker off: every request tries
// the store, even while it keeps failing.
func WithoutBreaker() Option {
	return optionFunc(func(c *config) { c.breakerFailures = 0 })
}

// WithLocalTier keeps the hottest fresh entries in this process too, in
// at most about maxBytes (keys, values and bookkeeping), and serves them
// without a store round trip, even while the store's circuit breaker is
// open. An entry stays in the local tier no longer than it stays fresh in
// the shared store; stale entries and the marks of keys made uncacheable
// for a while ([PassTTL]) are always read from the shared store, so
// revalidation and uncacheable keys work as without it. When any process deletes an entry (an unsafe request's
// invalidation) or replaces it, every process's local tier drops it,
// through the store's invalidation broadcasts ([InvalidationWatcher]:
// Redis pub/sub for [RedisStore], on the process's one subscription
// connection). If that subscription breaks and comes back, the tier is
// emptied, since broadcasts may have been lost meanwhile; until go-redis
// notices the break (a few seconds at most), a process may serve an entry
// that another process has deleted, within its freshness. Changes made to
// Redis other than through a [Store] are not broadcast.
// [Stats.LocalHits] counts the tier's hits; the HTTP layer marks them in
// Cache-Status with detail=l1.
//
// Tagged entries ([WithTagHeader], [Tags], [Cache.DoTagged]) never enter
// the local tier: each hit on one reads its tags' purge versions from the
// shared store, so that a tag purge reaches it at once in every process.
//
// The store given to [New] must implement [InvalidationWatcher], or New
// panics; a [MemoryStore] does, but gains little from it. The default is
// no local tier; maxBytes must be positive.
func WithLocalTier(maxBytes int64) Option {
	if maxBytes <= 0 {
		panic(fmt.Sprintf("flightcache: WithLocalTier(%d): must be positive", maxBytes))
	}
	return optionFunc(func(c *config) { c.localTierBytes = maxBytes })
}

// defaultTTL is the freshness lifetime of a value whose fill set none.
func (c *config) defaultTTL() time.Duration { return c.policy.ttl }

// fillSpan bounds a fill from its lookup to its commit: the lock and the
// recheck, the fetch, and a poll's worth of lag. A commit later than that
// is dropped (its fetch overran the fetch timeout), so that tombstones,
// which live twice as long, fence off every commit that could still land.
func (c *config) fillSpan() time.Duration {
	return c.fetchTimeout + 4*c.storeTimeout + c.pollInterval
}
