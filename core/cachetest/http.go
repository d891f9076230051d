package cachetest

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// Driver puts a web framework and its flightcache adapter under the HTTP
// suite ([TestHTTP]). It must be safe to call from parallel subtests.
type Driver struct {
	// New returns a server for s: the framework's router with s.Endpoints,
	// and, if s.Global is not nil, the adapter installed once for all
	// routes with s.Global's options (empty: the cache's defaults).
	// A route with Cache not nil gets the adapter on that route alone,
	// with Cache's options.
	New func(c *core.Cache, s Server) http.Handler
	// Pattern returns the framework's route pattern for a suite path,
	// which is written gin/echo style ("/items/:id"): what the route
	// tables of [core.PerRoute] are keyed by. net/http's is "GET /items/{id}".
	Pattern func(path string) string
	// Store returns the store of one case's cache; the suite gives each
	// cache a namespace of its own, so stores may share one Redis. nil:
	// a new memory store per case.
	Store func(t *testing.T) core.Store
}

// Server describes the routes of one suite case.
type Server struct {
	Global    []core.PolicyOption // nil: no global middleware
	Endpoints []Endpoint
}

// Endpoint is one route of a suite server.
type Endpoint struct {
	Path    string              // gin/echo style; ":name" segments are parameters
	Handler http.HandlerFunc    // registered for GET, HEAD and POST
	Cache   []core.PolicyOption // not nil: the adapter on this route alone
}

// origin is a handler that counts its calls and writes them into the body.
type origin struct {
	calls atomic.Int64
	write func(w http.ResponseWriter, r *http.Request, n int64)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.calls.Add(1)
	if o.write != nil {
		o.write(w, r, n)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Origin", "yes")
	fmt.Fprintf(w, "call %d for %s", n, r.URL.RequestURI())
}

// waitStarted returns once the origin has been called.
func (o *origin) waitStarted() { o.waitCalls(1) }

// waitCalls returns once the origin has been called n times, or after
// 10 s, leaving the caller's assertions to fail.
func (o *origin) waitCalls(n int64) {
	deadline := time.Now().Add(10 * time.Second)
	for o.calls.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, h http.Handler, method, target string, header ...string) response {
	t.Helper()
	return doCtx(t, context.Background(), h, method, target, header...)
}

// doCtx is do with a request context.
func doCtx(t *testing.T, ctx context.Context, h http.Handler, method, target string, header ...string) response {
	t.Helper()
	r := httptest.NewRequestWithContext(ctx, method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return response{w.Code, w.Result().Header, string(body)}
}

// herd is [Herd] for a suite case whose origin o holds the fill once it
// has been called calls times.
func herd(t *testing.T, o *origin, calls int64, n int, release func(), send func(ctx context.Context, i int)) {
	t.Helper()
	Herd(t, n, func() bool { return o.calls.Load() >= calls }, release, send)
}

// Herd sends n requests for one key, send(ctx, i) each, and returns when
// all have been answered. Request 0 goes alone first; once leading
// reports that its fill is in flight (held by the handler until release),
// requests 1 to n-1 follow, and release is called once each of them waits
// on that fill, or after 10 s, failing t. So every request but the first
// is known to be queued behind the fill, without a sleep guessing how
// long that takes. Adapter tests use it for herds of their own.
func Herd(t *testing.T, n int, leading func() bool, release func(), send func(ctx context.Context, i int)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() { send(context.Background(), 0) })
	deadline := time.Now().Add(10 * time.Second)
	for !leading() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	parked := make(chan struct{}, n)
	for i := 1; i < n; i++ {
		ctx := &parkedContext{Context: context.Background(), parked: parked}
		wg.Go(func() { send(ctx, i) })
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
wait:
	for range n - 1 {
		select {
		case <-parked:
		case <-timeout.C:
			t.Errorf("%d requests did not all queue behind the fill within 10s", n-1)
			break wait
		}
	}
	release()
	wg.Wait()
}

// parkedContext is a request context that reports on parked, once, when
// its request first waits on it. A request that finds the fill of its
// key in flight selects on its context's Done while it waits for that
// fill, and nothing on its way there asks for Done earlier, so the report
// means the request is queued behind the fill.
type parkedContext struct {
	context.Context
	once   sync.Once
	parked chan<- struct{} // room for every request's report
}

func (c *parkedContext) Done() <-chan struct{} {
	c.once.Do(func() { c.parked <- struct{}{} })
	return c.Context.Done()
}

// newCache returns a cache for one case on d's store.
func newCache(t *testing.T, d Driver, opts ...core.Option) *core.Cache {
	c, _ := newClockedCache(t, d, opts...)
	return c
}

// newClockedCache returns a cache for one case on d's store, and the fake
// clock it reads freshness, ages and stale windows from: a case lets an
// entry go stale with clock.Advance instead of sleeping. The store expires
// keys on the fake clock too (clockedStore), as well as on its own.
func newClockedCache(t *testing.T, d Driver, opts ...core.Option) (*core.Cache, *testhook.Clock) {
	c, store := newCacheOnClockedStore(t, d, opts...)
	return c, store.clock
}

// newCacheOnClockedStore is newClockedCache, returning the store the
// cache writes through, which records what it was given.
func newCacheOnClockedStore(t *testing.T, d Driver, opts ...core.Option) (*core.Cache, *clockedStore) {
	var s core.Store
	if d.Store != nil {
		s = d.Store(t)
	} else {
		m := core.NewMemoryStore(0)
		t.Cleanup(func() { m.Close() })
		s = m
	}
	clock := testhook.NewClock(time.Now())
	store := &clockedStore{Store: s, clock: clock, expires: map[string]time.Time{}}
	c := core.New(store, append([]core.Option{core.WithNamespace("http-" + uniqueID())}, opts...)...)
	testhook.SetClock(c, clock.Now)
	return c, store
}

// FakeClock gives c a fake clock to read freshness, ages and stale windows
// from, for tests outside module core, and returns the function that moves
// it forward: a test lets an entry go stale with advance instead of
// sleeping. The clock stands still until advanced. Call FakeClock right
// after [core.New], before c serves anything. The store still expires keys
// on its own clock.
func FakeClock(c *core.Cache) (advance func(d time.Duration)) {
	clock := testhook.NewClock(time.Now())
	testhook.SetClock(c, clock.Now)
	return clock.Advance
}

// clockedStore expires keys on a fake clock as well as on the store's
// own, so that a case advancing the clock sees the store drop what it
// would have dropped by then: an entry past its ttl and the time kept
// after it, a pass marker past PassTTL.
type clockedStore struct {
	core.Store
	clock   *testhook.Clock
	mu      sync.Mutex           // guards expires and longest; held across a SetNX
	expires map[string]time.Time // by the fake clock
	longest time.Duration        // the longest lifetime a value was stored with
}

func (s *clockedStore) expired(key string) bool {
	exp, ok := s.expires[key]
	return ok && !s.clock.Now().Before(exp)
}

func (s *clockedStore) Get(ctx context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	expired := s.expired(key)
	s.mu.Unlock()
	if expired {
		return nil, core.ErrNotFound
	}
	return s.Store.Get(ctx, key)
}

func (s *clockedStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired(key) {
		// Gone by the fake clock: the store still holds it, so SetNX is
		// a replacement of whatever is there.
		delete(s.expires, key)
		if cur, err := s.Store.Get(ctx, key); err == nil {
			ok, err := s.Store.Replace(ctx, key, cur, value, ttl)
			if ok {
				s.expires[key] = s.clock.Now().Add(ttl)
				return value, true, nil
			}
			if err != nil {
				return nil, false, err
			}
		}
	}
	stored, won, err := s.Store.SetNX(ctx, key, value, ttl)
	if won {
		s.expires[key] = s.clock.Now().Add(ttl)
		s.longest = max(s.longest, ttl)
	}
	return stored, won, err
}

func (s *clockedStore) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.Store.Replace(ctx, key, old, value, ttl)
	if ok {
		s.expires[key] = s.clock.Now().Add(ttl)
		s.longest = max(s.longest, ttl)
	}
	return ok, err
}

func (s *clockedStore) Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.Store.Invalidate(ctx, key, old, marker, ttl)
	if ok {
		s.expires[key] = s.clock.Now().Add(ttl)
	}
	return ok, err
}

// TestHTTP runs the adapter behaviour suite through d: the same cases for
// every framework. Each topic runs as a subtest (TestHTTP/Basic/MissThenHit);
// a new case is one more t.Run in its topic's function.
func TestHTTP(t *testing.T, d Driver) {
	for _, topic := range httpTopics {
		t.Run(topic.name, func(t *testing.T) { topic.test(t, d) })
	}
}

// httpTopics are the topics of [TestHTTP], in the order they run.
var httpTopics = []struct {
	name string
	test func(t *testing.T, d Driver)
}{
	{"Basic", testBasic},
	{"Ranges", testRanges},
	{"Keys", testKeys},
	{"Storability", testStorability},
	{"Credentials", testCredentials},
	{"Streaming", testStreaming},
	{"Conditional", testConditional},
	{"Unsafe", testUnsafe},
	{"Freshness", testFreshness},
	{"Stale", testStale},
	{"Headers", testHeaders},
	{"Security", testSecurity},
	{"Routes", testRoutes},
	{"Vary", testVary},
	{"Concurrency", testConcurrency},
	{"Tags", testTags},
}

// endpoint is the one route most cases need: h at /r.
func endpoint(h http.HandlerFunc) []Endpoint { return []Endpoint{{Path: "/r", Handler: h}} }

// testBasic tests the plain miss, hit and replay of a response.
func testBasic(t *testing.T, d Driver) {
	t.Run("MissThenHit", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		first := do(t, h, "GET", "/r")
		second := do(t, h, "GET", "/r")
		if first.header.Get("X-Cache") != "MISS" || second.header.Get("X-Cache") != "HIT" {
			t.Errorf("X-Cache = %q then %q, want MISS then HIT", first.header.Get("X-Cache"), second.header.Get("X-Cache"))
		}
		if first.body != second.body || o.calls.Load() != 1 {
			t.Errorf("bodies %q and %q after %d origin calls, want one call and equal bodies", first.body, second.body, o.calls.Load())
		}
		if second.header.Get("Age") == "" {
			t.Error("a hit has no Age header")
		}
	})

	t.Run("ReplaysStatusHeadersBodyExactly", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Add("X-Multi", "one")
			w.Header().Add("X-Multi", "two")
			w.WriteHeader(http.StatusNonAuthoritativeInfo)
			fmt.Fprintf(w, `{"n":%d}`, n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.Statuses(203)}, Endpoints: endpoint(o.ServeHTTP)})
		first, second := do(t, h, "GET", "/r"), do(t, h, "GET", "/r")
		for _, got := range []response{first, second} {
			if got.status != 203 || got.body != `{"n":1}` || got.header.Get("Content-Type") != "application/json" ||
				strings.Join(got.header.Values("X-Multi"), ",") != "one,two" {
				t.Errorf("response = %d %q %v, want 203 {\"n\":1} with both X-Multi values", got.status, got.body, got.header)
			}
		}
	})

	t.Run("StatusNotInListNotCached", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "missing %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		got := do(t, h, "GET", "/r")
		if got.status != 404 || got.body != "missing 2" || got.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("second 404 = %d %q X-Cache %q, want a fresh 404 marked BYPASS", got.status, got.body, got.header.Get("X-Cache"))
		}
	})

	t.Run("HeadSharesGet", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		if got := do(t, h, "HEAD", "/r"); got.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("HEAD on a cold key X-Cache = %q, want BYPASS (HEAD never fills)", got.header.Get("X-Cache"))
		}
		get := do(t, h, "GET", "/r")
		head := do(t, h, "HEAD", "/r")
		if head.header.Get("X-Cache") != "HIT" || head.body != "" || head.header.Get("Content-Length") != fmt.Sprint(len(get.body)) {
			t.Errorf("HEAD after GET = X-Cache %q, body %q, Content-Length %q; want HIT, no body, %d",
				head.header.Get("X-Cache"), head.body, head.header.Get("Content-Length"), len(get.body))
		}
	})
}

// testRanges tests range requests.
func testRanges(t *testing.T, d Driver) {
	t.Run("RangeServedFromAStoredResponse", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		if got := do(t, h, "GET", "/r", "Range", "bytes=0-3"); got.header.Get("X-Cache") != "BYPASS" || o.calls.Load() != 1 {
			t.Errorf("a range request on a cold key: X-Cache %q after %d origin calls, want BYPASS to the handler", got.header.Get("X-Cache"), o.calls.Load())
		}
		full := do(t, h, "GET", "/r") // "call 2 for /r", stored
		part := do(t, h, "GET", "/r", "Range", "bytes=5-10")
		if part.status != http.StatusPartialContent || part.body != full.body[5:11] || part.header.Get("X-Cache") != "HIT" ||
			part.header.Get("Content-Range") != fmt.Sprintf("bytes 5-10/%d", len(full.body)) || part.header.Get("Content-Length") != "6" {
			t.Errorf("range of a stored response = %d %q X-Cache %q Content-Range %q Content-Length %q; want 206 %q from the cache",
				part.status, part.body, part.header.Get("X-Cache"), part.header.Get("Content-Range"), part.header.Get("Content-Length"), full.body[5:11])
		}
		if got := do(t, h, "GET", "/r", "Range", "bytes=1000-"); got.status != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("an unsatisfiable range = %d, want 416", got.status)
		}
		if got := do(t, h, "GET", "/r", "Range", "bytes=0-3", "If-Range", `"another-etag"`); got.status != http.StatusOK || got.body != full.body {
			t.Errorf("a range with a stale If-Range = %d %q, want the whole 200", got.status, got.body)
		}
		if n := o.calls.Load(); n != 2 {
			t.Errorf("origin called %d times, want 2 (the cold range request and one fill)", n)
		}
	})

	t.Run("RangeAmplificationGetsTheWholeBody", func(t *testing.T) {
		// A handler that never offered ranges: the cache answers them
		// from its stored copy, and must not turn a small request into a
		// response many times the body's size.
		big, small := bigBody(256<<10), bigBody(100)
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if r.URL.Query().Has("small") {
				io.WriteString(w, small)
				return
			}
			io.WriteString(w, big)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r") // stored
		do(t, h, "GET", "/r?small")
		ranges := func(n int, spec func(i int) string) string {
			parts := make([]string, n)
			for i := range parts {
				parts[i] = spec(i)
			}
			return "bytes=" + strings.Join(parts, ",")
		}
		for _, tc := range []struct{ name, target, body, rg string }{
			{"OverlappingOneByteRanges", "/r", big, ranges(60000, func(int) string { return "0-0" })},
			{"OverlappingWholeBody", "/r", big, ranges(20, func(int) string { return "0-" })},
			{"TooManyRanges", "/r", big, ranges(core.MaxRanges+1, func(i int) string { return fmt.Sprintf("%d-%d", i*10, i*10) })},
			{"Descending", "/r", big, "bytes=200-299,0-99"},
			{"Overlapping", "/r", big, "bytes=0-99,50-149"},
			{"PartsBiggerThanTheBody", "/r?small", small, "bytes=0-0,10-10,20-20"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := tc.body
				got := do(t, h, "GET", tc.target, "Range", tc.rg)
				if len(got.body) > len(body) || got.status != http.StatusOK || got.body != body || got.header.Get("X-Cache") != "HIT" {
					t.Errorf("Range of %d bytes on a %d-byte body: %d, %d bytes (X-Cache %q), want the whole 200 from the cache, no larger than the body",
						len(tc.rg), len(body), got.status, len(got.body), got.header.Get("X-Cache"))
				}
			})
		}
		if n := o.calls.Load(); n != 2 {
			t.Errorf("origin called %d times, want 2 (two fills)", n)
		}
	})

	t.Run("SmallMultiRangeServed", func(t *testing.T) {
		body := bigBody(256 << 10)
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, body)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		got := do(t, h, "GET", "/r", "Range", "bytes=0-9, 1000-1099,-5")
		mediaType, params, err := mime.ParseMediaType(got.header.Get("Content-Type"))
		if got.status != http.StatusPartialContent || err != nil || mediaType != "multipart/byteranges" {
			t.Fatalf("three ranges = %d Content-Type %q, want 206 multipart/byteranges", got.status, got.header.Get("Content-Type"))
		}
		mr := multipart.NewReader(strings.NewReader(got.body), params["boundary"])
		for _, want := range []struct{ first, last int }{{0, 9}, {1000, 1099}, {len(body) - 5, len(body) - 1}} {
			part, err := mr.NextPart()
			if err != nil {
				t.Fatalf("part %d-%d: %v", want.first, want.last, err)
			}
			b, _ := io.ReadAll(part)
			wantRange := fmt.Sprintf("bytes %d-%d/%d", want.first, want.last, len(body))
			if string(b) != body[want.first:want.last+1] || part.Header.Get("Content-Range") != wantRange {
				t.Errorf("part %q Content-Range %q, want %q %q", b, part.Header.Get("Content-Range"), body[want.first:want.last+1], wantRange)
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Errorf("after three parts: %v, want EOF", err)
		}
	})
}

// bigBody returns n bytes of text in which every 16-byte run differs from
// its neighbours', so that a wrong range shows.
func bigBody(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%015x\n", i)
	}
	return b.String()[:n]
}

// testKeys tests what is part of the cache key.
func testKeys(t *testing.T, d Driver) {
	t.Run("QueryOrderIsOneKey", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		a := do(t, h, "GET", "/r?b=2&a=1")
		b := do(t, h, "GET", "/r?a=1&b=2")
		c := do(t, h, "GET", "/r?a=1&b=3")
		if a.body != b.body || b.header.Get("X-Cache") != "HIT" {
			t.Errorf("reordered query got %q (X-Cache %q), want the cached %q", b.body, b.header.Get("X-Cache"), a.body)
		}
		if c.body == a.body {
			t.Error("a different parameter value was served the same entry")
		}
	})

	t.Run("IgnoredAndKeyedQuery", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.IgnoreQuery("utm_source")}, Endpoints: endpoint(o.ServeHTTP)})
		a := do(t, h, "GET", "/r?id=1&utm_source=mail")
		b := do(t, h, "GET", "/r?id=1&utm_source=ads")
		if b.body != a.body {
			t.Errorf("ignored parameter changed the entry: %q vs %q", b.body, a.body)
		}
		o2 := &origin{}
		h2 := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.KeyQuery("id")}, Endpoints: endpoint(o2.ServeHTTP)})
		a = do(t, h2, "GET", "/r?id=1&x=1")
		b = do(t, h2, "GET", "/r?id=1&x=2")
		c := do(t, h2, "GET", "/r?id=2&x=1")
		if b.body != a.body || c.body == a.body {
			t.Errorf("KeyQuery(id): bodies %q, %q, %q; want the first two equal, the third different", a.body, b.body, c.body)
		}
	})

	// Junk queries spend a route's key budget; a herd on a new popular
	// key must still make one origin call, not one per request.
	t.Run("MaxKeysStillCollapses", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if n == 2 {
				<-release // the herd's leader: hold the others behind it
			}
			fmt.Fprintf(w, "call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.MaxKeys(1)}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r?junk=1") // spends the budget
		const n = 20
		got := make([]response, n)
		herd(t, o, 2, n, func() { close(release) }, func(ctx context.Context, i int) {
			got[i] = doCtx(t, ctx, h, "GET", "/r?popular=1")
		})
		if calls := o.calls.Load(); calls != 2 {
			t.Errorf("origin called %d times for the junk key and a herd of %d on a new key over the limit, want 2", calls, n)
		}
		for i, r := range got {
			if r.body != "call 2" {
				t.Errorf("request %d got %q, want the herd's one call 2", i, r.body)
			}
		}
		if got := do(t, h, "GET", "/r?popular=1"); got.header.Get("X-Cache") == "HIT" {
			t.Errorf("the key over the limit was stored: X-Cache %q", got.header.Get("X-Cache"))
		}
	})

	t.Run("MaxKeysBoundsARoutesKeys", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.MaxKeys(2)}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r?a=1")
		do(t, h, "GET", "/r?a=2")
		for range 2 {
			got := do(t, h, "GET", "/r?a=3")
			if got.header.Get("X-Cache") != "BYPASS" || !strings.Contains(got.header.Get("Cache-Status"), "detail=key-limit") {
				t.Errorf("a third key: X-Cache %q Cache-Status %q, want BYPASS for the key limit", got.header.Get("X-Cache"), got.header.Get("Cache-Status"))
			}
		}
		for _, target := range []string{"/r?a=1", "/r?a=2"} {
			if got := do(t, h, "GET", target); got.header.Get("X-Cache") != "HIT" {
				t.Errorf("%s within the limit: X-Cache %q, want HIT", target, got.header.Get("X-Cache"))
			}
		}
		if n := o.calls.Load(); n != 4 {
			t.Errorf("origin called %d times, want 4 (two fills, two uncached answers)", n)
		}
	})
}

// testStorability tests which responses are stored.
func testStorability(t *testing.T, d Driver) {
	t.Run("SetCookieNeverCached", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: fmt.Sprint("secret-", n)})
			fmt.Fprintf(w, "personal %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		first, second := do(t, h, "GET", "/r"), do(t, h, "GET", "/r")
		if second.body == first.body || strings.Contains(second.header.Get("Set-Cookie"), "secret-1") {
			t.Errorf("second client got %q with Set-Cookie %q: the first client's response leaked", second.body, second.header.Get("Set-Cookie"))
		}
		if second.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("X-Cache = %q, want BYPASS", second.header.Get("X-Cache"))
		}
	})

	t.Run("PrivateAndNoStoreNotCached", func(t *testing.T) {
		for _, cc := range []string{"private, max-age=60", "no-store", "no-cache", "max-age=0"} {
			o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
				w.Header().Set("Cache-Control", cc)
				fmt.Fprintf(w, "call %d", n)
			}}
			h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
			do(t, h, "GET", "/r")
			if got := do(t, h, "GET", "/r"); got.body != "call 2" {
				t.Errorf("Cache-Control %q: second response %q, want a fresh call 2", cc, got.body)
			}
		}
	})

	t.Run("CookieBypassesUnlessKeyed", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r") // a public entry exists
		if got := do(t, h, "GET", "/r", "Cookie", "session=alice"); got.header.Get("X-Cache") != "BYPASS" || got.body != "call 2 for /r" {
			t.Errorf("request with Cookie: %q X-Cache %q, want the handler's own answer marked BYPASS", got.body, got.header.Get("X-Cache"))
		}
	})

	t.Run("OversizedPassesThrough", func(t *testing.T) {
		big := strings.Repeat("x", 4096)
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			fmt.Fprintf(w, "%d:%s", n, big)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.MaxBodySize(1024)}, Endpoints: endpoint(o.ServeHTTP)})
		first, second := do(t, h, "GET", "/r"), do(t, h, "GET", "/r")
		if first.body != "1:"+big || second.body != "2:"+big {
			t.Errorf("oversized bodies came back as %d and %d bytes, want each client its own full body", len(first.body), len(second.body))
		}
		if second.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("X-Cache = %q, want BYPASS", second.header.Get("X-Cache"))
		}
	})

	t.Run("ExplicitFreshness", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			status int
			header []string
			stored bool
		}{
			{"ExpiresFuture", 200, []string{"Expires", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, true},
			{"ExpiresPast", 200, []string{"Expires", "Thu, 01 Jan 2015 00:00:00 GMT"}, false},
			{"ExpiresInvalid", 200, []string{"Expires", "0"}, false},
			{"404WithMaxAge", 404, []string{"Cache-Control", "max-age=60"}, true},
			{"404WithoutFreshness", 404, nil, false},
			{"500WithMaxAge", 500, []string{"Cache-Control", "max-age=60"}, false},
			{"AgeUsedUp", 200, []string{"Cache-Control", "max-age=60", "Age", "100"}, false},
			{"AgeMalformed", 200, []string{"Cache-Control", "max-age=60", "Age", "7.5"}, false},
			{"SurrogateNoStore", 200, []string{"Cache-Control", "max-age=60", "Surrogate-Control", "no-store"}, false},
			{"SurrogateMaxAge", 200, []string{"Cache-Control", "no-store", "Surrogate-Control", "max-age=60"}, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
					for i := 0; i+1 < len(tc.header); i += 2 {
						w.Header().Set(tc.header[i], tc.header[i+1])
					}
					w.WriteHeader(tc.status)
					fmt.Fprintf(w, "call %d", n)
				}}
				h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
				do(t, h, "GET", "/r")
				got := do(t, h, "GET", "/r")
				if stored := got.body == "call 1"; stored != tc.stored {
					t.Errorf("%d %v: second response %q, stored = %v, want %v", tc.status, tc.header, got.body, stored, tc.stored)
				}
			})
		}
	})
}

// testCredentials tests requests with Authorization (RFC 9111, section 3.5).
func testCredentials(t *testing.T, d Driver) {
	t.Run("CredentialsGetOnlySharedResponses", func(t *testing.T) {
		o := whoami(&origin{})
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		// A stored response without public, s-maxage or must-revalidate
		// is not served to a request with Authorization...
		do(t, h, "GET", "/r")
		alice := do(t, h, "GET", "/r", "Authorization", "alice")
		if alice.body != "user=alice call=2" || alice.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("alice got %q (X-Cache %q), want her own response", alice.body, alice.header.Get("X-Cache"))
		}
		// ...and the response to one is not stored, nor does it stop
		// the URL's anonymous requests from being cached.
		do(t, h, "GET", "/r?two", "Authorization", "bob")
		first, second := do(t, h, "GET", "/r?two"), do(t, h, "GET", "/r?two")
		if strings.Contains(first.body, "bob") || second.body != first.body || second.header.Get("X-Cache") != "HIT" {
			t.Errorf("anonymous requests after bob's got %q then %q (X-Cache %q); want bob's unseen and the second a HIT",
				first.body, second.body, second.header.Get("X-Cache"))
		}
	})

	// An API authenticating with its own header, answering each customer
	// under one URL with no Vary or Cache-Control: declared, the header
	// is treated like Authorization.
	t.Run("CredentialHeadersTreatedLikeAuthorization", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			fmt.Fprintf(w, "account of %s", r.Header.Get("X-Api-Key"))
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.CredentialHeaders("x-api-key")}, Endpoints: endpoint(o.ServeHTTP)})
		first := do(t, h, "GET", "/r", "X-Api-Key", "customer-1")
		second := do(t, h, "GET", "/r", "X-Api-Key", "customer-2")
		if first.body != "account of customer-1" || second.body != "account of customer-2" {
			t.Errorf("customers got %q then %q, want each their own account", first.body, second.body)
		}
		if anon := do(t, h, "GET", "/r"); strings.Contains(anon.body, "customer") {
			t.Errorf("an anonymous request got %q, a customer's response", anon.body)
		}
	})

	t.Run("CredentialsStoreWhatSaysPublic", func(t *testing.T) {
		o := whoami(&origin{})
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		carol := do(t, h, "GET", "/r?public", "Authorization", "carol")
		anon := do(t, h, "GET", "/r?public")
		dave := do(t, h, "GET", "/r?public", "Authorization", "dave")
		if anon.body != carol.body || dave.body != carol.body || dave.header.Get("X-Cache") != "HIT" || o.calls.Load() != 1 {
			t.Errorf("a public response got %q, %q, %q after %d origin calls; want carol's stored once and served to all",
				carol.body, anon.body, dave.body, o.calls.Load())
		}
	})

	t.Run("CredentialsConcurrentNeverShared", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if n == 1 {
				<-release // the leader: hold the others behind its fill
			}
			fmt.Fprintf(w, "user=%s", r.Header.Get("Authorization"))
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		const n = 20
		got := make([]response, n)
		herd(t, o, 1, n, func() { close(release) }, func(ctx context.Context, i int) {
			got[i] = doCtx(t, ctx, h, "GET", "/r", "Authorization", fmt.Sprint("user-", i))
		})
		for i, r := range got {
			if want := fmt.Sprint("user=user-", i); r.body != want {
				t.Errorf("client %d got %q, want %q", i, r.body, want)
			}
		}
	})

	t.Run("CredentialsKeyedAreCachedPerCredential", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.KeyHeaders("Authorization")}, Endpoints: endpoint(o.ServeHTTP)})
		alice := do(t, h, "GET", "/r", "Authorization", "alice")
		alice2 := do(t, h, "GET", "/r", "Authorization", "alice")
		bob := do(t, h, "GET", "/r", "Authorization", "bob")
		if alice2.body != alice.body || alice2.header.Get("X-Cache") != "HIT" {
			t.Errorf("keyed credential: alice's second request %q (X-Cache %q), want her cached %q", alice2.body, alice2.header.Get("X-Cache"), alice.body)
		}
		if bob.body == alice.body {
			t.Error("bob was served alice's entry")
		}
	})
}

// testStreaming tests streamed responses and clients that leave.
func testStreaming(t *testing.T, d Driver) {
	t.Run("StreamedPassesThrough", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			fmt.Fprintf(w, "chunk one of %d;", n)
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("Flush through the adapter: %v", err)
			}
			fmt.Fprint(w, "chunk two")
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		first, second := do(t, h, "GET", "/r"), do(t, h, "GET", "/r")
		if first.body != "chunk one of 1;chunk two" || second.body != "chunk one of 2;chunk two" {
			t.Errorf("streamed bodies %q, %q; want each client its own stream", first.body, second.body)
		}
	})

	t.Run("StreamEndsWhenItsClientLeaves", func(t *testing.T) {
		ended := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			defer close(ended)
			fmt.Fprint(w, "event 1\n")
			http.NewResponseController(w).Flush()
			<-r.Context().Done() // a stream runs until its client leaves
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() {
			defer close(served)
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/r", nil).WithContext(ctx))
		}()
		o.waitStarted()
		cancel()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a streaming handler still ran 5s after its client left; its context must end with the client once it streams")
		}
		<-served
	})

	t.Run("FillSurvivesItsClientLeaving", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			<-release
			if r.Context().Err() != nil {
				t.Errorf("the fill's handler saw its context end when its client left: %v", r.Context().Err())
			}
			fmt.Fprintf(w, "call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() {
			defer close(served)
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/r", nil).WithContext(ctx))
		}()
		o.waitStarted()
		cancel() // the client that started the fill disconnects
		close(release)
		<-served
		if got := do(t, h, "GET", "/r"); got.body != "call 1" || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("after the filling client left: %q (X-Cache %q), want the completed fill served as a HIT", got.body, got.header.Get("X-Cache"))
		}
	})
}

// testConditional tests conditional requests answered from the cache.
func testConditional(t *testing.T, d Driver) {
	t.Run("ConditionalRequestsGet304", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Last-Modified", "Tue, 03 Nov 2026 10:00:00 GMT")
			fmt.Fprintf(w, "call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		first := do(t, h, "GET", "/r", "If-None-Match", `"stale"`) // the fill ignores the condition
		etag := first.header.Get("ETag")
		if first.status != 200 || etag == "" {
			t.Fatalf("first response %d with ETag %q, want 200 with a computed ETag", first.status, etag)
		}
		if got := do(t, h, "GET", "/r", "If-None-Match", etag); got.status != 304 || got.body != "" || got.header.Get("ETag") != etag {
			t.Errorf("If-None-Match: %s = %d %q ETag %q, want 304 without a body", etag, got.status, got.body, got.header.Get("ETag"))
		}
		if got := do(t, h, "GET", "/r", "If-None-Match", `W/"other", `+etag); got.status != 304 {
			t.Errorf("If-None-Match with a list = %d, want 304", got.status)
		}
		if got := do(t, h, "GET", "/r", "If-None-Match", `"other"`); got.status != 200 || got.body != "call 1" {
			t.Errorf("non-matching If-None-Match = %d %q, want the stored 200", got.status, got.body)
		}
		if got := do(t, h, "GET", "/r", "If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"); got.status != 304 {
			t.Errorf("If-Modified-Since after Last-Modified = %d, want 304", got.status)
		}
		if got := do(t, h, "GET", "/r", "If-Modified-Since", "Mon, 02 Nov 2026 10:00:00 GMT"); got.status != 200 {
			t.Errorf("If-Modified-Since before Last-Modified = %d, want 200", got.status)
		}
		if o.calls.Load() != 1 {
			t.Errorf("origin called %d times, want 1", o.calls.Load())
		}
	})
}

// testUnsafe tests unsafe methods and invalidation.
func testUnsafe(t *testing.T, d Driver) {
	t.Run("UnsafeMethodInvalidates", func(t *testing.T) {
		var version atomic.Int64
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if r.Method == http.MethodPost {
				if r.URL.Query().Get("fail") != "" {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				version.Add(1)
				w.WriteHeader(http.StatusNoContent)
				return
			}
			fmt.Fprintf(w, "version %d", version.Load())
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		do(t, h, "POST", "/r?fail=1") // a failed change invalidates nothing
		if got := do(t, h, "GET", "/r"); got.header.Get("X-Cache") != "HIT" {
			t.Errorf("after a failed POST X-Cache = %q, want HIT", got.header.Get("X-Cache"))
		}
		if got := do(t, h, "POST", "/r"); got.status != 204 || got.header.Get("X-Cache") != "BYPASS" {
			t.Errorf("POST = %d X-Cache %q, want 204 BYPASS", got.status, got.header.Get("X-Cache"))
		}
		if got := do(t, h, "GET", "/r"); got.body != "version 1" || got.header.Get("X-Cache") != "MISS" {
			t.Errorf("GET after POST = %q (X-Cache %q), want a fresh version 1", got.body, got.header.Get("X-Cache"))
		}
	})

	// A redirect says nothing about its target having changed: a router
	// redirecting an unclean path, or a handler redirecting any POST (a
	// logout to "/"), must not let anyone wipe a page fleet-wide.
	t.Run("RedirectDoesNotInvalidate", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if r.Method == http.MethodPost {
				http.Redirect(w, r, "/r", http.StatusSeeOther)
				return
			}
			w.Header().Set("Cache-Control", "max-age=3600")
			fmt.Fprintf(w, "call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		if got := do(t, h, "POST", "/r"); got.status != http.StatusSeeOther {
			t.Fatalf("POST = %d, want 303", got.status)
		}
		if got := do(t, h, "GET", "/r"); got.body != "call 1" || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("GET after a POST answered with a redirect = %q (X-Cache %q), want the stored call 1", got.body, got.header.Get("X-Cache"))
		}
	})
}

// testFreshness tests freshness lifetimes and Age, on a fake clock.
func testFreshness(t *testing.T, d Driver) {
	t.Run("HandlerCacheControlIsTTL", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "public, max-age=5, s-maxage=1")
			fmt.Fprintf(w, "call %d", n)
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{core.TTL(time.Hour)}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		if got := do(t, h, "GET", "/r"); got.body != "call 1" {
			t.Fatalf("within s-maxage got %q, want the cached call 1", got.body)
		}
		clock.Advance(900 * time.Millisecond)
		if got := do(t, h, "GET", "/r"); got.body != "call 1" {
			t.Fatalf("0.9s into s-maxage=1 got %q, want the cached call 1", got.body)
		}
		clock.Advance(200 * time.Millisecond) // s-maxage=1 beats the route's hour
		if got := do(t, h, "GET", "/r"); got.body != "call 2" {
			t.Errorf("after s-maxage got %q, want a fresh call 2", got.body)
		}
	})

	t.Run("AgeIncludesUpstreamAge", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=3600")
			w.Header().Set("Age", "30")
			fmt.Fprintf(w, "call %d", n)
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		if age := do(t, h, "GET", "/r").header.Get("Age"); age != "30" {
			t.Errorf("Age = %q, want the 30s it arrived with", age)
		}
		clock.Advance(5 * time.Second)
		if age := do(t, h, "GET", "/r").header.Get("Age"); age != "35" {
			t.Errorf("Age 5s later = %q, want 35: the 30s it arrived with and 5s in the cache", age)
		}
	})
}

// testStale tests stale entries: revalidation and RFC 5861, on a fake clock.
func testStale(t *testing.T, d Driver) {
	t.Run("EarlyRefresh", func(t *testing.T) {
		// The refresh of call 3 streams: the client that set it off
		// must get the stored response alone.
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=10")
			fmt.Fprintf(w, "version %d", n)
			if n == 3 {
				http.NewResponseController(w).Flush()
			}
		}}
		var plain atomic.Int64
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Endpoints: []Endpoint{
			{Path: "/r", Handler: o.ServeHTTP, Cache: []core.PolicyOption{core.EarlyRefresh(2)}},
			{Path: "/plain", Handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=10")
				fmt.Fprintf(w, "plain %d", plain.Add(1))
			}, Cache: []core.PolicyOption{}},
		}})
		do(t, h, "GET", "/r")
		do(t, h, "GET", "/plain")
		clock.Advance(10*time.Second - 50*time.Millisecond) // within the refresh window
		got := do(t, h, "GET", "/r")
		if got.status != 200 || got.body != "version 1" || got.header.Get("X-Cache") != "HIT" || got.header.Get("Connection") != "close" {
			t.Errorf("in the refresh window: %d %q X-Cache %q Connection %q, want 200 version 1 HIT close",
				got.status, got.body, got.header.Get("X-Cache"), got.header.Get("Connection"))
		}
		if n := o.calls.Load(); n != 2 {
			t.Fatalf("%d origin calls, want 2: the fill and the early refresh", n)
		}
		if got := do(t, h, "GET", "/r"); got.body != "version 2" || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("after the refresh: %q (X-Cache %q), want version 2, a HIT", got.body, got.header.Get("X-Cache"))
		}
		if got := do(t, h, "GET", "/plain"); got.body != "plain 1" || plain.Load() != 1 {
			t.Errorf("a route without EarlyRefresh: %q after %d origin calls, want plain 1 and no refresh", got.body, plain.Load())
		}
		clock.Advance(10*time.Second - 50*time.Millisecond)
		if got := do(t, h, "GET", "/r"); got.body != "version 2" {
			t.Errorf("when a streaming refresh ran: the client got %q, want version 2 alone", got.body)
		}
		if n := o.calls.Load(); n != 3 {
			t.Errorf("%d origin calls, want 3", n)
		}
	})

	t.Run("StaleEntryIsRevalidated", func(t *testing.T) {
		var conditional atomic.Int64
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=1")
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("X-Served", fmt.Sprint("call-", n))
			if r.Header.Get("If-None-Match") == `"v1"` {
				conditional.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprint(w, "the body")
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		clock.Advance(2 * time.Second) // let it go stale
		got := do(t, h, "GET", "/r")
		if conditional.Load() != 1 || got.status != 200 || got.body != "the body" || got.header.Get("X-Served") != "call-2" {
			t.Errorf("after revalidation: %d %q X-Served %q (%d conditional origin calls), want 200 with the stored body, the 304's headers, 1 conditional call",
				got.status, got.body, got.header.Get("X-Served"), conditional.Load())
		}
		if got := do(t, h, "GET", "/r"); got.header.Get("X-Cache") != "HIT" || got.body != "the body" {
			t.Errorf("after revalidation the entry is %q (X-Cache %q), want a fresh HIT", got.body, got.header.Get("X-Cache"))
		}
	})

	t.Run("StaleWhileRevalidate", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if n == 2 {
				<-release // the refresh: slow
			}
			if r.URL.Query().Has("own") {
				w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
			} else {
				w.Header().Set("Cache-Control", "max-age=1")
			}
			fmt.Fprintf(w, "version %d", n)
		}}
		for _, tc := range []struct {
			name, target string
			opts         []core.PolicyOption
		}{
			{"ResponseDirective", "/r?own", []core.PolicyOption{}},
			{"RouteDefault", "/r", []core.PolicyOption{core.StaleWhileRevalidate(time.Minute)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				o.calls.Store(0)
				release = make(chan struct{})
				c, clock := newClockedCache(t, d)
				h := d.New(c, Server{Global: tc.opts, Endpoints: endpoint(o.ServeHTTP)})
				do(t, h, "GET", tc.target)
				clock.Advance(2 * time.Second) // let it go stale
				refreshed := make(chan response, 1)
				go func() { refreshed <- do(t, h, "GET", tc.target) }()
				o.waitCalls(2) // the refresh is at the origin
				for range 3 {
					got := do(t, h, "GET", tc.target)
					if got.body != "version 1" || got.header.Get("X-Cache") != "STALE" || !strings.Contains(got.header.Get("Cache-Status"), "ttl=-") {
						t.Errorf("during the refresh: %q X-Cache %q Cache-Status %q, want the stale version 1 at once",
							got.body, got.header.Get("X-Cache"), got.header.Get("Cache-Status"))
					}
				}
				close(release)
				if got := <-refreshed; got.body != "version 2" {
					t.Errorf("the refreshing request got %q, want version 2", got.body)
				}
				if got := do(t, h, "GET", tc.target); got.body != "version 2" || got.header.Get("X-Cache") != "HIT" {
					t.Errorf("after the refresh: %q X-Cache %q, want a HIT of version 2", got.body, got.header.Get("X-Cache"))
				}
				if n := o.calls.Load(); n != 2 {
					t.Errorf("origin called %d times, want 2", n)
				}
			})
		}
	})

	t.Run("MustRevalidateIsNeverServedStale", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=1, must-revalidate")
			fmt.Fprintf(w, "version %d", n)
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{core.StaleWhileRevalidate(time.Minute)}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		clock.Advance(2 * time.Second)
		if got := do(t, h, "GET", "/r"); got.body != "version 2" {
			t.Errorf("a stale must-revalidate response: got %q, want version 2 from the origin", got.body)
		}
	})

	t.Run("StaleIfError", func(t *testing.T) {
		for _, tc := range []struct {
			name, target string
			opts         []core.PolicyOption
			stale        bool // the failed refill's requests get the stale entry
		}{
			{"ResponseDirective", "/r?sie", []core.PolicyOption{}, true},
			{"RouteDefault", "/r", []core.PolicyOption{core.StaleIfError(time.Minute)}, true},
			{"NotAllowed", "/r", []core.PolicyOption{}, false},
			{"MustRevalidate", "/r?must", []core.PolicyOption{core.StaleIfError(time.Minute)}, false},
			{"WindowPassed", "/r?sie=0", []core.PolicyOption{core.StaleIfError(time.Minute)}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var failing atomic.Bool
				release := make(chan struct{})
				o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
					if failing.Load() {
						<-release
						w.WriteHeader(http.StatusServiceUnavailable)
						fmt.Fprintf(w, "down %d", n)
						return
					}
					cc := "max-age=1"
					switch q := r.URL.Query(); {
					case q.Has("must"):
						cc += ", must-revalidate"
					case q.Get("sie") == "0":
						cc += ", stale-if-error=0"
					case q.Has("sie"):
						cc += ", stale-if-error=60"
					}
					w.Header().Set("Cache-Control", cc)
					fmt.Fprintf(w, "version %d", n)
				}}
				c, clock := newClockedCache(t, d)
				h := d.New(c, Server{Global: tc.opts, Endpoints: endpoint(o.ServeHTTP)})
				do(t, h, "GET", tc.target)
				clock.Advance(2 * time.Second) // let it go stale
				failing.Store(true)

				const clients = 4
				got := make([]response, clients)
				// The first client's refill is at the failing origin (its
				// second call) while the other clients wait on it.
				herd(t, o, 2, clients, func() { close(release) }, func(ctx context.Context, i int) {
					got[i] = doCtx(t, ctx, h, "GET", tc.target)
				})
				for i, g := range got {
					switch {
					case tc.stale && (g.status != 200 || g.body != "version 1" || g.header.Get("X-Cache") != "STALE" ||
						!strings.Contains(g.header.Get("Cache-Status"), "ttl=-")):
						t.Errorf("client %d: %d %q X-Cache %q Cache-Status %q, want the stale version 1",
							i, g.status, g.body, g.header.Get("X-Cache"), g.header.Get("Cache-Status"))
					case !tc.stale && (g.status != http.StatusServiceUnavailable || !strings.HasPrefix(g.body, "down")):
						t.Errorf("client %d: %d %q, want the origin's 503", i, g.status, g.body)
					}
				}
				// One failed refill for all the clients, which all waited
				// on it: 2 calls in all.
				if n := o.calls.Load(); tc.stale && n != 2 {
					t.Errorf("origin called %d times, want 2: one failed refill shared by all %d clients", n, clients)
				}
				if tc.stale && c.Stats().Errors.Load() != 0 {
					t.Errorf("a 503 counted as %d absorbed errors, want none (only handler errors are)", c.Stats().Errors.Load())
				}

				// Without a stale window, a failure belongs to the request
				// whose fill failed: each waiting client got its own
				// answer, not the first one's.
				if n := o.calls.Load(); !tc.stale && n != 1+clients {
					t.Errorf("origin called %d times, want %d: each of the %d clients its own refill", n, 1+clients, clients)
				}

				// The origin is back: the next request goes to it at once
				// and is stored (a 503 is no evidence that the URL cannot
				// be cached, so it leaves no uncacheable marker).
				failing.Store(false)
				calls := o.calls.Load()
				want := "MISS"
				if g := do(t, h, "GET", tc.target); g.status != 200 || g.body != fmt.Sprintf("version %d", calls+1) || g.header.Get("X-Cache") != want {
					t.Errorf("after the origin recovered: %d %q X-Cache %q, want version %d, %s", g.status, g.body, g.header.Get("X-Cache"), calls+1, want)
				}
			})
		}
	})
}

// testHeaders tests the headers the cache adds.
func testHeaders(t *testing.T, d Driver) {
	t.Run("CacheStatus", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		for _, want := range []string{"flightcache; fwd=uri-miss; fwd-status=200; stored", "flightcache; hit; ttl="} {
			if got := do(t, h, "GET", "/r").header.Get("Cache-Status"); !strings.HasPrefix(got, want) {
				t.Errorf("Cache-Status = %q, want %q...", got, want)
			}
		}
		if got := do(t, h, "GET", "/r", "Authorization", "x").header.Get("Cache-Status"); got != "flightcache; fwd=request" {
			t.Errorf("Cache-Status of a credentialed request = %q, want fwd=request", got)
		}
		if got := do(t, h, "GET", "/r", "Cookie", "x").header.Get("Cache-Status"); got != "flightcache; fwd=bypass" {
			t.Errorf("Cache-Status of a request with a cookie = %q, want fwd=bypass", got)
		}
	})
}

// testRoutes tests per-route middleware and route tables.
func testRoutes(t *testing.T, d Driver) {
	t.Run("PerRouteMiddleware", func(t *testing.T) {
		cached, plain := &origin{}, &origin{}
		h := d.New(newCache(t, d), Server{Endpoints: []Endpoint{
			{Path: "/cached", Handler: cached.ServeHTTP, Cache: []core.PolicyOption{core.TTL(time.Hour)}},
			{Path: "/plain", Handler: plain.ServeHTTP},
		}})
		do(t, h, "GET", "/cached")
		do(t, h, "GET", "/plain")
		c2, p2 := do(t, h, "GET", "/cached"), do(t, h, "GET", "/plain")
		if c2.header.Get("X-Cache") != "HIT" || cached.calls.Load() != 1 {
			t.Errorf("annotated route: X-Cache %q after %d calls, want HIT after 1", c2.header.Get("X-Cache"), cached.calls.Load())
		}
		if p2.header.Get("X-Cache") != "" || plain.calls.Load() != 2 {
			t.Errorf("route without middleware: X-Cache %q after %d calls, want none after 2", p2.header.Get("X-Cache"), plain.calls.Load())
		}
	})

	t.Run("RouteTable", func(t *testing.T) {
		product, admin := &origin{}, &origin{}
		h := d.New(newCache(t, d), Server{
			Global: []core.PolicyOption{core.PerRoute(map[string][]core.PolicyOption{
				d.Pattern("/products/:id"):                           {core.TTL(time.Hour)},
				strings.TrimSuffix(d.Pattern("/admin/"), "/") + "/*": {core.NoCache()},
			})},
			Endpoints: []Endpoint{
				{Path: "/products/:id", Handler: product.ServeHTTP},
				{Path: "/admin/stats", Handler: admin.ServeHTTP},
			},
		})
		do(t, h, "GET", "/products/7")
		p := do(t, h, "GET", "/products/7")
		do(t, h, "GET", "/admin/stats")
		a := do(t, h, "GET", "/admin/stats")
		if p.header.Get("X-Cache") != "HIT" {
			t.Errorf("/products/7 X-Cache = %q, want HIT", p.header.Get("X-Cache"))
		}
		if a.header.Get("X-Cache") != "BYPASS" || admin.calls.Load() != 2 {
			t.Errorf("/admin/stats X-Cache = %q after %d calls, want BYPASS after 2 (table says NoCache)", a.header.Get("X-Cache"), admin.calls.Load())
		}
	})
}

// testVary tests responses that vary on request headers.
func testVary(t *testing.T, d Driver) {
	t.Run("VaryStoresOneVariantPerHeaderValue", func(t *testing.T) {
		o := language(&origin{})
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		en := do(t, h, "GET", "/r", "Accept-Language", "en")
		de := do(t, h, "GET", "/r", "Accept-Language", "de")
		none := do(t, h, "GET", "/r")
		if en.body != "lang=en call=1" || de.body != "lang=de call=2" || none.body != "lang= call=3" {
			t.Fatalf("first requests got %q, %q, %q; want each its own variant", en.body, de.body, none.body)
		}
		for _, tc := range []struct{ lang, want string }{{"en", en.body}, {"de", de.body}, {"", none.body}} {
			var got response
			if tc.lang == "" {
				got = do(t, h, "GET", "/r")
			} else {
				got = do(t, h, "GET", "/r", "Accept-Language", tc.lang)
			}
			if got.body != tc.want || got.header.Get("X-Cache") != "HIT" {
				t.Errorf("Accept-Language %q again: %q (X-Cache %q), want the stored %q", tc.lang, got.body, got.header.Get("X-Cache"), tc.want)
			}
		}
		head := do(t, h, "HEAD", "/r", "Accept-Language", "de")
		if head.header.Get("X-Cache") != "HIT" || head.header.Get("Content-Length") != fmt.Sprint(len(de.body)) {
			t.Errorf("HEAD for de: X-Cache %q Content-Length %q, want a HIT of the de variant", head.header.Get("X-Cache"), head.header.Get("Content-Length"))
		}
		if n := o.calls.Load(); n != 3 {
			t.Errorf("origin called %d times for 3 variants, want 3", n)
		}
	})

	t.Run("VaryUnsafeMethodRetiresEveryVariant", func(t *testing.T) {
		o := language(&origin{})
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r", "Accept-Language", "en")
		do(t, h, "GET", "/r", "Accept-Language", "de")
		do(t, h, "POST", "/r")
		for _, lang := range []string{"en", "de"} {
			if got := do(t, h, "GET", "/r", "Accept-Language", lang); got.header.Get("X-Cache") != "MISS" {
				t.Errorf("%s after POST: X-Cache %q (%q), want MISS", lang, got.header.Get("X-Cache"), got.body)
			}
		}
	})

	t.Run("VaryStarNeverStored", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Vary", "Accept, *")
			fmt.Fprintf(w, "call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		if got := do(t, h, "GET", "/r"); got.body != "call 2" {
			t.Errorf("second request for a Vary: * response got %q, want call 2", got.body)
		}
	})

	t.Run("VaryChangeStartsANewIndexWhenTheOldExpires", func(t *testing.T) {
		var onEncoding atomic.Bool
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			name := "Accept-Language"
			if onEncoding.Load() {
				name = "Accept-Encoding"
			}
			w.Header().Set("Vary", name)
			fmt.Fprintf(w, "%s=%s call=%d", name, r.Header.Get(name), n)
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{core.TTL(time.Minute)}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r", "Accept-Language", "en")
		onEncoding.Store(true)
		// A new variant now varies on a header the index does not name:
		// it must not be stored under the old index, where a client with
		// another Accept-Encoding would be served it.
		gzip := do(t, h, "GET", "/r", "Accept-Language", "de", "Accept-Encoding", "gzip")
		br := do(t, h, "GET", "/r", "Accept-Language", "de", "Accept-Encoding", "br")
		if !strings.HasPrefix(gzip.body, "Accept-Encoding=gzip") || !strings.HasPrefix(br.body, "Accept-Encoding=br") {
			t.Fatalf("got %q and %q, want each client its own encoding", gzip.body, br.body)
		}
		// Once the old index has expired (with the variant it was made
		// for), the next response starts a new one.
		clock.Advance(time.Minute + time.Second)
		first := do(t, h, "GET", "/r", "Accept-Language", "fr", "Accept-Encoding", "br")
		again := do(t, h, "GET", "/r", "Accept-Language", "de", "Accept-Encoding", "br")
		if again.body != first.body || again.header.Get("X-Cache") != "HIT" {
			t.Errorf("br again: %q (X-Cache %q), want the stored %q under the new index", again.body, again.header.Get("X-Cache"), first.body)
		}
	})

	// A CORS middleware adds Vary: Origin only when Origin is sent: one
	// such request must not retire the variants every other client uses.
	t.Run("OneRequestDoesNotRetireEveryVariant", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=3600")
			w.Header().Add("Vary", "Accept-Language")
			if r.Header.Get("Origin") != "" {
				w.Header().Add("Vary", "Origin")
			}
			fmt.Fprintf(w, "lang=%s call=%d", r.Header.Get("Accept-Language"), n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		langs := []string{"en", "de", "fr"}
		for _, l := range langs {
			do(t, h, "GET", "/r", "Accept-Language", l)
		}
		for i := range 5 { // each a variant not stored yet, so its handler runs
			do(t, h, "GET", "/r", "Accept-Language", fmt.Sprint("xx-", i), "Origin", "https://evil.example")
		}
		calls := o.calls.Load()
		for _, l := range langs {
			if got := do(t, h, "GET", "/r", "Accept-Language", l); got.header.Get("X-Cache") != "HIT" {
				t.Errorf("%s after requests with Origin: X-Cache %q, want HIT (its variant kept)", l, got.header.Get("X-Cache"))
			}
		}
		if n := o.calls.Load(); n != calls {
			t.Errorf("origin called %d more times to re-render the variants, want 0", n-calls)
		}
	})

	t.Run("VaryConcurrentClientsShareOnlyTheirVariant", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			<-release
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprintf(w, "lang=%s", r.Header.Get("Accept-Language"))
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		langs := []string{"en", "de", "fr"}
		const n = 60
		got := make([]response, n)
		herd(t, o, 1, n, func() { close(release) }, func(ctx context.Context, i int) {
			got[i] = doCtx(t, ctx, h, "GET", "/r", "Accept-Language", langs[i%len(langs)])
		})
		for i, r := range got {
			if want := "lang=" + langs[i%len(langs)]; r.body != want {
				t.Errorf("client %d (Accept-Language %s) got %q, want %q", i, langs[i%len(langs)], r.body, want)
			}
		}
		if calls := o.calls.Load(); calls != int64(len(langs)) {
			t.Errorf("origin called %d times for %d variants, want %d", calls, len(langs), len(langs))
		}
	})
}

// testConcurrency tests herds of concurrent requests for one key.
func testConcurrency(t *testing.T, d Driver) {
	t.Run("ConcurrentWaitersNeverGetAPrivateResponse", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if n == 1 {
				<-release // the leader: hold the others behind its fill
			}
			http.SetCookie(w, &http.Cookie{Name: "session", Value: fmt.Sprint("user-", n)})
			fmt.Fprintf(w, "for user %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		const n = 20
		got := make([]response, n)
		herd(t, o, 1, n, func() { close(release) }, func(ctx context.Context, i int) {
			got[i] = doCtx(t, ctx, h, "GET", "/r")
		})
		seen := map[string]bool{}
		for _, r := range got {
			cookie := r.header.Get("Set-Cookie")
			if seen[cookie] || !strings.Contains(cookie, "user-") || !strings.HasSuffix(r.body, strings.TrimPrefix(strings.Split(cookie, ";")[0], "session=user-")) {
				t.Errorf("client got body %q with Set-Cookie %q: shared or mismatched", r.body, cookie)
			}
			seen[cookie] = true
		}
	})

	t.Run("ConcurrentClientsOneOriginCall", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			<-release
			fmt.Fprintf(w, "call %d", n)
		}}
		c := newCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		const n = 50
		bodies := make([]string, n)
		herd(t, o, 1, n, func() { close(release) }, func(ctx context.Context, i int) {
			r := httptest.NewRequestWithContext(ctx, "GET", "/r", nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			bodies[i] = w.Body.String()
		})
		for i, b := range bodies {
			if b != "call 1" {
				t.Errorf("client %d got %q, want call 1", i, b)
			}
		}
		if got := o.calls.Load(); got != 1 {
			t.Errorf("origin called %d times, want 1", got)
		}
		if got := c.Stats().Collapsed.Load(); got != n-1 {
			t.Errorf("Stats().Collapsed = %d, want %d: every client but the first served by its fill", got, n-1)
		}
	})
}

// whoami answers with the caller's credentials, public when the
// request asks for it with ?public.
func whoami(o *origin) *origin {
	o.write = func(w http.ResponseWriter, r *http.Request, n int64) {
		if r.URL.Query().Has("public") {
			w.Header().Set("Cache-Control", "public, max-age=60")
		}
		fmt.Fprintf(w, "user=%s call=%d", r.Header.Get("Authorization"), n)
	}
	return o
}

// language is a handler whose response varies on Accept-Language.
func language(o *origin) *origin {
	o.write = func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprintf(w, "lang=%s call=%d", r.Header.Get("Accept-Language"), n)
	}
	return o
}

// reflector is a handler that, like many real ones, builds its response
// from request parts the cache key may not cover.
func reflector(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Cache-Control", "public, max-age=600")
	fmt.Fprintf(w, "host=%s xfh=%s proto=%s override=%s query=%s body=%s",
		r.Host, r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"),
		r.Header.Get("X-HTTP-Method-Override"), r.URL.RawQuery, body)
}

// testSecurity tests what an anonymous request can and cannot make the
// cache do to other users' responses.
func testSecurity(t *testing.T, d Driver) {
	// One request's own headers can make the handler fail (gin's content
	// negotiation answering 406 to an odd Accept, an auth group answering
	// 401): that says nothing about the URL, so it must not switch
	// caching off for the URL, nor be handed to the requests waiting.
	junkAccept := func(o *origin, hold <-chan struct{}) {
		o.write = func(w http.ResponseWriter, r *http.Request, n int64) {
			if hold != nil && n == 1 {
				<-hold
			}
			if r.Header.Get("Accept") == "application/x-junk" {
				http.Error(w, "not acceptable", http.StatusNotAcceptable)
				return
			}
			fmt.Fprintf(w, "page call %d", n)
		}
	}
	t.Run("RequestCausedErrorLeavesNoMarker", func(t *testing.T) {
		o := &origin{}
		junkAccept(o, nil)
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.TTL(time.Hour)}, Endpoints: endpoint(o.ServeHTTP)})
		if got := do(t, h, "GET", "/r", "Accept", "application/x-junk"); got.status != http.StatusNotAcceptable {
			t.Fatalf("junk Accept = %d, want 406", got.status)
		}
		for range 10 {
			do(t, h, "GET", "/r")
		}
		if n := o.calls.Load(); n != 2 {
			t.Errorf("origin called %d times for a 406 and 10 clean requests, want 2: the 406 must not mark the URL uncacheable", n)
		}
	})

	t.Run("LeaderErrorStatusNotHandedToWaiters", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{}
		junkAccept(o, release)
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.TTL(time.Hour)}, Endpoints: endpoint(o.ServeHTTP)})
		const n = 20
		got := make([]response, n)
		herd(t, o, 1, n, func() { close(release) }, func(ctx context.Context, i int) {
			if i == 0 {
				got[i] = doCtx(t, ctx, h, "GET", "/r", "Accept", "application/x-junk")
				return
			}
			got[i] = doCtx(t, ctx, h, "GET", "/r")
		})
		if got[0].status != http.StatusNotAcceptable {
			t.Errorf("the junk leader got %d, want its 406", got[0].status)
		}
		for i, r := range got[1:] {
			if r.status != http.StatusOK {
				t.Errorf("waiter %d got %d %q, want its own 200", i+1, r.status, r.body)
			}
		}
		if calls := o.calls.Load(); calls != 2 {
			t.Errorf("origin called %d times, want 2: the junk leader's, then one new leader for the %d waiters", calls, n-1)
		}
	})

	// A junk Authorization on the request that would lead a cold key's
	// fill must not make the others wait for it, then run the handler
	// one by one: a request whose answer may be personal leads no fill.
	t.Run("CredentialedRequestLeadsNoHerd", func(t *testing.T) {
		release := make(chan struct{})
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if r.Header.Get("Authorization") != "" {
				<-release
			}
			fmt.Fprintf(w, "page call %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{core.TTL(time.Hour)}, Endpoints: endpoint(o.ServeHTTP)})
		var wg sync.WaitGroup
		wg.Go(func() { do(t, h, "GET", "/r", "Authorization", "Bearer junk") })
		o.waitStarted()
		const n = 20
		done := make(chan struct{})
		go func() {
			defer close(done)
			var herd sync.WaitGroup
			for range n {
				herd.Go(func() { do(t, h, "GET", "/r") })
			}
			herd.Wait()
		}()
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		select {
		case <-done:
		case <-timeout.C:
			t.Error("anonymous requests waited on a fill led by a request with Authorization")
		}
		close(release)
		<-done
		wg.Wait()
		if calls := o.calls.Load(); calls != 2 {
			t.Errorf("origin called %d times, want 2: the credentialed request's and one for the %d others", calls, n)
		}
	})

	// Junk queries on a varying URL each create a variant index: those
	// must not outlive the responses they index (they lived a day).
	t.Run("VariantIndexBoundedByItsVariants", func(t *testing.T) {
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=1")
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprintf(w, "call %d", n)
		}}
		c, store := newCacheOnClockedStore(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{core.MaxKeys(20)}, Endpoints: endpoint(o.ServeHTTP)})
		for i := range 50 {
			req := httptest.NewRequest("GET", fmt.Sprintf("/r?junk=%d", i), nil)
			req.Header.Set("Accept-Language", "fr")
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
		store.mu.Lock()
		defer store.mu.Unlock()
		if store.longest > time.Second {
			t.Errorf("longest stored lifetime = %v, want at most the responses' 1s", store.longest)
		}
	})

	t.Run("RequestNoCacheCannotForceOriginCalls", func(t *testing.T) {
		o := &origin{}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() { do(t, h, "GET", "/r", "Cache-Control", "no-cache", "Pragma", "no-cache") })
		}
		wg.Wait()
		if n := o.calls.Load(); n != 1 {
			t.Errorf("100 requests with Cache-Control: no-cache made %d origin calls, want 1", n)
		}
	})

	const evil = "evil.example"
	poison := []struct {
		name   string
		target string
		clean  string
		header []string
		body   string
	}{
		{"X-Forwarded-Host", "/r", "/r", []string{"X-Forwarded-Host", evil}, ""},
		{"X-Host", "/r", "/r", []string{"X-Host", evil}, ""},
		{"Forwarded", "/r", "/r", []string{"Forwarded", "host=" + evil}, ""},
		{"X-Forwarded-Proto", "/r", "/r", []string{"X-Forwarded-Proto", evil}, ""},
		{"MethodOverride", "/r", "/r", []string{"X-HTTP-Method-Override", evil}, ""},
		{"X-Original-URL", "/r", "/r", []string{"X-Original-URL", "/" + evil}, ""},
		{"FatGET", "/r", "/r", nil, evil},
		{"ParameterCloaking", "/r?a=1;a=" + evil, "/r?a=1", nil, ""},
		{"DuplicateParameter", "/r?a=1&a=" + evil, "/r?a=1", nil, ""},
		{"EncodedPath", "/r%3F" + evil, "/r", nil, ""},
	}
	for _, tc := range poison {
		t.Run("Poisoning"+tc.name, func(t *testing.T) {
			h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: []Endpoint{{Path: "/r", Handler: reflector}}})
			// The attacker goes first, on a cold key.
			req := httptest.NewRequest("GET", tc.target, strings.NewReader(tc.body))
			if tc.body == "" {
				req = httptest.NewRequest("GET", tc.target, nil)
			}
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			for range 2 {
				if got := do(t, h, "GET", tc.clean); strings.Contains(got.body, evil) {
					t.Fatalf("a clean request for %s got the attacker's response: %q", tc.clean, got.body)
				}
			}
		})
	}

	t.Run("DeceptionPersonalNeverShared", func(t *testing.T) {
		personal := func(w http.ResponseWriter, r *http.Request) {
			user := "anonymous"
			if c, err := r.Cookie("session"); err == nil {
				user = c.Value
			}
			w.Header().Set("Cache-Control", "public, max-age=600") // a careless handler
			fmt.Fprintf(w, "profile of %s", user)
		}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: []Endpoint{{Path: "/account/profile.css", Handler: personal}}})
		if got := do(t, h, "GET", "/account/profile.css", "Cookie", "session=alice"); got.body != "profile of alice" {
			t.Fatalf("victim got %q", got.body)
		}
		if got := do(t, h, "GET", "/account/profile.css"); strings.Contains(got.body, "alice") {
			t.Errorf("an anonymous request for a static-looking URL got the victim's page: %q", got.body)
		}
	})

	t.Run("ErrorsCausedByTheRequestNotStored", func(t *testing.T) {
		fragile := func(w http.ResponseWriter, r *http.Request) {
			if len(r.Header.Get("X-Junk")) > 100 {
				w.Header().Set("Cache-Control", "max-age=600")
				http.Error(w, "header too large", http.StatusRequestHeaderFieldsTooLarge)
				return
			}
			fmt.Fprint(w, "fine")
		}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: []Endpoint{{Path: "/r", Handler: fragile}}})
		do(t, h, "GET", "/r", "X-Junk", strings.Repeat("x", 4096))
		if got := do(t, h, "GET", "/r"); got.status != 200 || got.body != "fine" {
			t.Errorf("after an attacker's oversized header, a clean request got %d %q, want 200 fine", got.status, got.body)
		}
	})

	t.Run("LowerCaseResponseHeadersObeyStoreRules", func(t *testing.T) {
		// net/http sends a name set directly in the header map as it is
		// written: the cache must read these names as the ones they are.
		for _, tc := range []struct {
			name   string
			header http.Header // set directly, names as written
		}{
			{"SetCookie", http.Header{"set-cookie": {"session=user-{n}"}}},
			{"CacheControlPrivate", http.Header{"cache-control": {"private, max-age=600"}}},
			{"CacheControlNoStore", http.Header{"cache-control": {"no-store"}}},
			{"MergedWithCanonical", http.Header{"Cache-Control": {"public, max-age=600"}, "CACHE-CONTROL": {"private"}}},
			{"Vary", http.Header{"vary": {"Accept-Language"}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
					for k, vs := range tc.header {
						for _, v := range vs {
							w.Header()[k] = append(w.Header()[k], strings.ReplaceAll(v, "{n}", fmt.Sprint(n)))
						}
					}
					fmt.Fprintf(w, "call %d lang=%s", n, r.Header.Get("Accept-Language"))
				}}
				h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
				do(t, h, "GET", "/r", "Accept-Language", "de")
				got := do(t, h, "GET", "/r", "Accept-Language", "fr")
				if got.body != "call 2 lang=fr" {
					t.Errorf("second client got %q, want its own call 2 lang=fr", got.body)
				}
				for name, vs := range got.header {
					if strings.EqualFold(name, "Set-Cookie") && strings.Contains(strings.Join(vs, ";"), "user-1") {
						t.Errorf("second client got the first client's cookie: %s: %q", name, vs)
					}
				}
			})
		}
	})

	t.Run("CompressedWithoutVaryStaysWithItsCoding", func(t *testing.T) {
		// A compressing handler that forgets Vary: Accept-Encoding.
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			if slices.Contains(strings.Split(r.Header.Get("Accept-Encoding"), ", "), "gzip") {
				w.Header().Set("Content-Encoding", "gzip")
				fmt.Fprintf(w, "\x1f\x8bgzip bytes %d", n)
				return
			}
			fmt.Fprintf(w, "plain %d", n)
		}}
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		gzip := do(t, h, "GET", "/r", "Accept-Encoding", "gzip")
		if gzip.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("the gzip client got Content-Encoding %q", gzip.header.Get("Content-Encoding"))
		}
		for _, tc := range []struct {
			name   string
			header []string
		}{
			{"NoAcceptEncoding", nil},
			{"OtherCoding", []string{"Accept-Encoding", "br"}},
			{"Refused", []string{"Accept-Encoding", "br, gzip;q=0"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for i := range 2 {
					got := do(t, h, "GET", "/r", tc.header...)
					if got.header.Get("Content-Encoding") != "" || !strings.HasPrefix(got.body, "plain") {
						t.Errorf("request %d: Content-Encoding %q, body %q; want plain bytes", i, got.header.Get("Content-Encoding"), got.body)
					}
					if i == 1 && got.header.Get("X-Cache") != "HIT" {
						t.Errorf("request %d: X-Cache %q, want a HIT of its own variant", i, got.header.Get("X-Cache"))
					}
				}
			})
		}
		if got := do(t, h, "GET", "/r", "Accept-Encoding", "gzip"); got.body != gzip.body || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("the gzip client again: %q (X-Cache %q), want the stored %q", got.body, got.header.Get("X-Cache"), gzip.body)
		}
	})

	t.Run("VaryKeysOnTheLinesAsSent", func(t *testing.T) {
		// Handlers read Header.Get, the first field line as sent: a
		// variant must not be shared by values a normaliser would merge.
		cors := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Vary", "Origin")
			if r.Header.Get("Origin") == "https://good.example" {
				w.Header().Set("Access-Control-Allow-Origin", "https://good.example")
			}
			fmt.Fprint(w, "data")
		}
		lang := func(w http.ResponseWriter, r *http.Request) {
			// The language of highest q, the first of equals; the
			// site's default when none is named.
			w.Header().Set("Vary", "Accept-Language")
			best, bestQ := "", -1.0
			for elem := range strings.SplitSeq(r.Header.Get("Accept-Language"), ",") {
				name, params, _ := strings.Cut(elem, ";")
				q := 1.0
				if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
					fmt.Sscan(v, &q)
				}
				if name = strings.TrimSpace(name); name != "" && q > bestQ {
					best, bestQ = name, q
				}
			}
			if best == "" {
				best = "de"
			}
			fmt.Fprintf(w, "lang=%s", best)
		}
		for _, tc := range []struct {
			name     string
			handler  http.HandlerFunc
			attacker []string
			victim   []string
			check    func(r response) bool
		}{
			{"OriginTrailingComma", cors, []string{"Origin", "https://good.example,"}, []string{"Origin", "https://good.example"},
				func(r response) bool { return r.header.Get("Access-Control-Allow-Origin") == "https://good.example" }},
			{"EmptyFirstLine", lang, []string{"Accept-Language", "", "Accept-Language", "fr"}, []string{"Accept-Language", "fr"},
				func(r response) bool { return r.body == "lang=fr" }},
			{"SecondLine", lang, []string{"Accept-Language", "de;q=0.5", "Accept-Language", "fr"}, []string{"Accept-Language", "de;q=0.5, fr"},
				func(r response) bool { return r.body == "lang=fr" }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: endpoint(tc.handler)})
				do(t, h, "GET", "/r", tc.attacker...)
				for range 2 {
					if got := do(t, h, "GET", "/r", tc.victim...); !tc.check(got) {
						t.Errorf("after %q, a request with %q got %q, header %v: the attacker's variant", tc.attacker, tc.victim, got.body, got.header)
					}
				}
			})
		}
	})

	t.Run("DebugHeadersHideKeysAndTokens", func(t *testing.T) {
		h := d.New(newCache(t, d), Server{Global: []core.PolicyOption{}, Endpoints: []Endpoint{{Path: "/r", Handler: reflector}}})
		for range 2 {
			got := do(t, h, "GET", "/r?token=s3cr3t-t0ken")
			for name, vs := range got.header {
				for _, v := range vs {
					if name != "Content-Type" && strings.Contains(v, "s3cr3t") {
						t.Errorf("response header %s: %q exposes the request's token", name, v)
					}
				}
			}
		}
	})
}

// testTags tests tags (surrogate keys) and purges by tag.
func testTags(t *testing.T, d Driver) {
	t.Run("TagPurgeInvalidatesTaggedResponses", func(t *testing.T) {
		tagged := func(tags string) *origin {
			return &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
				w.Header().Set("Surrogate-Key", tags)
				fmt.Fprint(w, "call-", n)
			}}
		}
		a, b := tagged("x common"), tagged("y common")
		c := newCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{}, Endpoints: []Endpoint{
			{Path: "/a", Handler: a.ServeHTTP}, {Path: "/b", Handler: b.ServeHTTP},
		}})
		for _, path := range []string{"/a", "/b", "/a", "/b"} {
			if got := do(t, h, "GET", path); got.body != "call-1" || got.header.Values("Surrogate-Key") != nil {
				t.Fatalf("GET %s = %q with Surrogate-Key %q, want call-1 without it", path, got.body, got.header.Values("Surrogate-Key"))
			}
		}
		if err := c.PurgeTags(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
		if got := do(t, h, "GET", "/a"); got.body != "call-2" || got.header.Get("X-Cache") != "MISS" {
			t.Errorf("GET /a after purging its tag = %q (X-Cache %q), want a MISS with call-2", got.body, got.header.Get("X-Cache"))
		}
		if got := do(t, h, "GET", "/b"); got.body != "call-1" || got.header.Get("X-Cache") != "HIT" {
			t.Errorf("GET /b after purging another tag = %q (X-Cache %q), want a HIT with call-1", got.body, got.header.Get("X-Cache"))
		}
		if err := c.PurgeTags(context.Background(), "common"); err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]string{"/a": "call-3", "/b": "call-2"} {
			if got := do(t, h, "GET", path); got.body != want {
				t.Errorf("GET %s after purging a tag of both = %q, want %q", path, got.body, want)
			}
		}
	})

	t.Run("RevalidatedResponseKeepsItsTags", func(t *testing.T) {
		// The 304 that freshens a stale response need not repeat its
		// tags: a later purge of them still reaches it.
		var full atomic.Int64
		o := &origin{write: func(w http.ResponseWriter, r *http.Request, n int64) {
			w.Header().Set("Cache-Control", "max-age=1")
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Surrogate-Key", "x")
			fmt.Fprint(w, "full-", full.Add(1))
		}}
		c, clock := newClockedCache(t, d)
		h := d.New(c, Server{Global: []core.PolicyOption{}, Endpoints: endpoint(o.ServeHTTP)})
		do(t, h, "GET", "/r")
		clock.Advance(2 * time.Second) // stale: the next GET revalidates
		if got := do(t, h, "GET", "/r"); got.body != "full-1" || o.calls.Load() != 2 {
			t.Fatalf("revalidating GET = %q after %d origin calls, want full-1 after 2", got.body, o.calls.Load())
		}
		if got := do(t, h, "GET", "/r"); got.header.Get("X-Cache") != "HIT" {
			t.Fatalf("after revalidation X-Cache = %q, want HIT", got.header.Get("X-Cache"))
		}
		if err := c.PurgeTags(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
		if got := do(t, h, "GET", "/r"); got.body != "full-2" {
			t.Errorf("GET after purging the tag of the revalidated response = %q, want full-2", got.body)
		}
	})
}
