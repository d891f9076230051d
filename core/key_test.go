package core

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core/internal/entry"
)

func keyOf(t *testing.T, target string, p policy, header ...string) string {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	k, ok := p.requestKey(r)
	if !ok {
		t.Fatalf("requestKey(%s) bypassed", target)
	}
	return k
}

func TestRequestKeyFramingIsUnambiguous(t *testing.T) {
	p := defaultPolicy()
	p.headerKeys = []string{"Accept-Language"}
	pairs := [][2]string{
		{"/a?b=c&d=e", "/a?b=c%26d%3De"}, // a separator smuggled into a value
		{"/a?bc=d", "/a?b=cd"},           // a boundary moved between name and value
		{"/a?b=1&b=2", "/a?b=2&b=1"},     // duplicate values keep their order
		{"/a?b=1&b=2", "/a?b=1"},         // a duplicate is not dropped
		{"/a%2Fb", "/a/b"},               // an encoded slash is another path
		{"/a?b", "/a?b="},                // the same value spelled twice is one key (below)
	}
	for _, pr := range pairs[:5] {
		if keyOf(t, pr[0], p) == keyOf(t, pr[1], p) {
			t.Errorf("%q and %q share a key", pr[0], pr[1])
		}
	}
	if keyOf(t, pairs[5][0], p) != keyOf(t, pairs[5][1], p) {
		t.Errorf("%q and %q have different keys; both mean b=\"\"", pairs[5][0], pairs[5][1])
	}
	if keyOf(t, "/a", p, "Accept-Language", "de") == keyOf(t, "/a", p, "Accept-Language", "fr") {
		t.Error("a keyed header's value does not change the key")
	}
	if keyOf(t, "http://EXAMPLE.com/a", p) != keyOf(t, "http://example.com/a", p) {
		t.Error("host case changes the key")
	}
}

func TestRequestKeyBypasses(t *testing.T) {
	p := defaultPolicy()
	for _, tc := range []struct {
		method, target string
		header         []string
	}{
		{"POST", "/a", nil},
		{"GET", "/a?x=1;y=2", nil}, // Go rejects semicolons; a handler might not
		{"GET", "/a", []string{"X-Forwarded-Host", "evil.example"}},
		{"GET", "/a", []string{"Cookie", "s=1"}},
		{"GET", "/a", []string{"Upgrade", "websocket"}},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		for i := 0; i+1 < len(tc.header); i += 2 {
			r.Header.Set(tc.header[i], tc.header[i+1])
		}
		if _, ok := p.requestKey(r); ok {
			t.Errorf("%s %s %v was cacheable, want bypass", tc.method, tc.target, tc.header)
		}
	}
}

func TestVariantKeys(t *testing.T) {
	p := defaultPolicy()
	v := entry.Variants{Names: []string{"Accept-Encoding", "Accept-Language"}, Generation: "g1"}
	key := func(gen string, header ...string) string {
		r := httptest.NewRequest("GET", "/a", nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Add(header[i], header[i+1])
		}
		ukey, ok := p.requestKey(r)
		if !ok {
			t.Fatalf("%v bypassed", header)
		}
		return variantKey(ukey, entry.Variants{Names: v.Names, Generation: gen}, r)
	}
	base := key("g1", "Accept-Encoding", "gzip, br", "Accept-Language", "de")
	if key("g1", "Accept-Encoding", "gzip, br", "Accept-Language", "de", "Cookie-Free", "x") != base {
		t.Error("a header the index does not name selects another variant")
	}
	// Variants are keyed on the field lines as sent: whatever a
	// normaliser would merge, the handler may tell apart (Header.Get
	// reads the first line alone).
	for _, other := range [][]string{
		{"Accept-Encoding", "gzip,br", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip", "Accept-Encoding", "br", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip, br,", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip, br", "Accept-Language", "", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip, br", "Accept-Language", ",de"},
		{"Accept-Encoding", "br, gzip", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip, br"},
		{"Accept-Encoding", "gzip, br", "Accept-Language", ""},
		{"Accept-Encoding", "gzip, br", "Accept-Language", "fr"},
	} {
		if key("g1", other...) == base {
			t.Errorf("%q selects the same variant as gzip, br / de", other)
		}
	}
	if key("g1", "Accept-Encoding", "gzip", "Accept-Encoding", "br") == key("g1", "Accept-Encoding", "gzip, br") {
		t.Error("two field lines select the same variant as one line with both values")
	}
	if key("g2", "Accept-Encoding", "gzip, br", "Accept-Language", "de") == base {
		t.Error("a new index generation keeps the old variant keys")
	}
}

// FuzzKey checks that any order of the same query parameters gives one key.
func FuzzKey(f *testing.F) {
	f.Add("a=1&b=2&c=3", uint64(1))
	f.Add("x=%20&x=2&y=", uint64(7))
	f.Fuzz(func(t *testing.T, query string, seed uint64) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		p := defaultPolicy()
		base := httptest.NewRequest("GET", "/p", nil)
		base.URL.RawQuery = q.Encode()
		want, ok := p.requestKey(base)
		if !ok {
			return
		}
		// Shuffle the parameters (not the values of one name: their
		// order can matter to a handler).
		names := make([]string, 0, len(q))
		for name := range q {
			names = append(names, name)
		}
		rand.New(rand.NewPCG(seed, seed)).Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		var parts []string
		for _, name := range names {
			for _, v := range q[name] {
				parts = append(parts, url.QueryEscape(name)+"="+url.QueryEscape(v))
			}
		}
		r := httptest.NewRequest("GET", "/p", nil)
		r.URL.RawQuery = strings.Join(parts, "&")
		if got, _ := p.requestKey(r); got != want {
			t.Errorf("query %q and %q have different keys", base.URL.RawQuery, r.URL.RawQuery)
		}
	})
}

func TestKeyLimiterAdmitsUpToMaxPerWindow(t *testing.T) {
	l := newKeyLimiter(2, time.Minute)
	now := time.Now()
	for _, k := range []string{"a", "b", "a"} {
		if !l.admit(k, now) {
			t.Errorf("admit(%q) = false within the limit", k)
		}
	}
	if l.admit("c", now) {
		t.Error("admit(c) = true past the limit")
	}
	// Once the window has passed, old keys stop counting.
	if !l.admit("c", now.Add(time.Minute+time.Second)) {
		t.Error("admit(c) = false after the window")
	}
	later := now.Add(time.Minute + 2*time.Second)
	if !l.admit("d", later) || l.admit("e", later) {
		t.Error("the new window did not admit exactly one more key")
	}
}

func TestKeyHost(t *testing.T) {
	byPath := KeyFunc(func(r *http.Request) string { return r.URL.Path })
	for _, tc := range []struct {
		name string
		opts []PolicyOption
		a, b string // request targets
		same bool
	}{
		{"default: hosts differ", nil, "http://a.example/p", "http://b.example/p", false},
		{"fixed host: hosts share", []PolicyOption{KeyHost("www.example")}, "http://a.example/p", "http://b.example/p", true},
		{"fixed host: paths differ", []PolicyOption{KeyHost("www.example")}, "http://a.example/p", "http://a.example/q", false},
		{"fixed host: schemes differ", []PolicyOption{KeyHost("www.example")}, "http://a.example/p", "https://a.example/p", false},
		{"no host: hosts share", []PolicyOption{KeyHost("")}, "http://a.example/p?x=1", "http://b.example/p?x=1", true},
		{"no host: queries differ", []PolicyOption{KeyHost("")}, "http://a.example/p?x=1", "http://b.example/p?x=2", false},
		{"fixed host, KeyQuery: other parameters ignored", []PolicyOption{KeyHost("www.example"), KeyQuery("id")}, "http://a.example/p?id=1&utm=x", "http://b.example/p?id=1&utm=y", true},
		{"fixed host, KeyQuery: keyed parameter differs", []PolicyOption{KeyHost("www.example"), KeyQuery("id")}, "http://a.example/p?id=1", "http://b.example/p?id=2", false},
		{"KeyQuery, then no host", []PolicyOption{KeyQuery("id"), KeyHost("")}, "http://a.example/p?id=1&utm=x", "http://b.example/p?id=1", true},
		{"no host, IgnoreQuery: ignored parameter", []PolicyOption{KeyHost(""), IgnoreQuery("utm")}, "http://a.example/p?id=1&utm=x", "http://b.example/p?id=1&utm=y", true},
		{"no host, IgnoreQuery: other parameter differs", []PolicyOption{KeyHost(""), IgnoreQuery("utm")}, "http://a.example/p?id=1", "http://b.example/p?id=2", false},
		{"KeyFunc wins over KeyHost", []PolicyOption{KeyHost("www.example"), byPath}, "http://a.example/p?x=1", "http://b.example/p?x=2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaultPolicy()
			for _, o := range tc.opts {
				o.route(&p)
			}
			ka, kb := keyOf(t, tc.a, p), keyOf(t, tc.b, p)
			if (ka == kb) != tc.same {
				t.Errorf("keys of %s and %s equal = %v, want %v", tc.a, tc.b, ka == kb, tc.same)
			}
		})
	}

	// A fixed host is the key a request for that host has by default, in
	// any case: instances keying on their public name share entries with
	// those that see it as the Host.
	fixed := defaultPolicy()
	KeyHost("WWW.Example").route(&fixed)
	if got, want := keyOf(t, "http://10.0.0.7:8080/p?x=1", fixed), keyOf(t, "http://www.example/p?x=1", defaultPolicy()); got != want {
		t.Errorf("key under KeyHost(%q) = %q, want the default key for that host, %q", "WWW.Example", got, want)
	}
}

// TestKeyHostThroughMiddleware serves one URL under two Host names to a
// route keyed on a fixed host: the second is a hit.
func TestKeyHostThroughMiddleware(t *testing.T) {
	s := NewMemoryStore(0)
	defer s.Close()
	mw := New(s).Middleware(KeyHost("www.example"))
	calls := 0
	next := func(w http.ResponseWriter, r *http.Request) error {
		calls++
		w.Write([]byte("page"))
		return nil
	}
	for i, host := range []string{"www.example", "10.0.0.7:8080"} {
		w := httptest.NewRecorder()
		if err := mw.Serve(w, httptest.NewRequest("GET", "http://"+host+"/p", nil), "", next); err != nil {
			t.Fatal(err)
		}
		if want := []string{"MISS", "HIT"}[i]; w.Header().Get("X-Cache") != want || w.Body.String() != "page" {
			t.Errorf("request for host %s: X-Cache %q, body %q, want %s and page", host, w.Header().Get("X-Cache"), w.Body.String(), want)
		}
	}
	if calls != 1 {
		t.Errorf("handler ran %d times, want 1", calls)
	}
}

func TestWithNamespace(t *testing.T) {
	for _, ns := range []string{"flightcache", "app:cache", "a.b-c_d:v2:", ":", strings.Repeat("n", 64)} {
		t.Run(ns, func(t *testing.T) {
			c := defaultConfig()
			WithNamespace(ns).apply(&c)
			if c.namespace != ns {
				t.Fatalf("namespace = %q, want %q", c.namespace, ns)
			}
			key := storeKey(ns, "some key")
			if !strings.HasPrefix(key, ns+":{") || !strings.HasSuffix(key, "}") {
				t.Fatalf("storeKey = %q, want %q:{hash}", key, ns)
			}
			// Redis Cluster hashes the first {…} of a name: for the value,
			// lock and channel names alike it must be the key's hash.
			want := key[len(ns)+2 : len(key)-1]
			if len(want) != 22 || strings.ContainsAny(want, "{}") {
				t.Fatalf("hash tag %q, want 22 characters without braces", want)
			}
			for _, name := range []string{key, key + lockSuffix, key + channelSuffix, key + invalidatedSuffix} {
				if got := hashTag(name); got != want {
					t.Errorf("hash tag of %q = %q, want %q", name, got, want)
				}
			}
		})
	}
	for _, ns := range []string{"", "a{b}", "{tag}", "a b", "a*", "a?", "a[b]", "ü", strings.Repeat("n", 65)} {
		t.Run("invalid/"+ns, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("WithNamespace(%q) did not panic", ns)
				}
			}()
			WithNamespace(ns)
		})
	}
}

// hashTag returns the part of a Redis key name that Redis Cluster hashes
// when it has a hash tag: between the first '{' and the first '}' after
// it, if not empty.
func hashTag(name string) string {
	_, rest, ok := strings.Cut(name, "{")
	if !ok {
		return ""
	}
	tag, _, ok := strings.Cut(rest, "}")
	if !ok || tag == "" {
		return ""
	}
	return tag
}

// TestNamespaceWithColonOnRedis fills a key of a cache whose namespace
// holds colons, on miniredis, and finds the value under that namespace.
func TestNamespaceWithColonOnRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	s := NewRedisStore(rdb)
	defer s.Close()
	c := New(s, WithNamespace("app:cache:v2"))
	v, err := c.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
	if err != nil || string(v) != "v" {
		t.Fatalf("Do = (%q, %v), want v", v, err)
	}
	want := storeKey("app:cache:v2", "k")
	if keys := mr.Keys(); !slices.Contains(keys, want) {
		t.Errorf("Redis keys %q, want %q among them", keys, want)
	}
}

// TestRequestKeyFormatIsStable pins the bytes of cache keys and their
// store keys: processes of one fleet running different versions must
// find each other's entries, so a faster way of building a key must
// build the same one. The expected values were made by the key code
// before the hit path was optimised.
func TestRequestKeyFormatIsStable(t *testing.T) {
	p := defaultPolicy()
	p.headerKeys = []string{"Accept-Language"}
	c := New(NewMemoryStore(0), WithNamespace("ns"))
	for _, tc := range []struct{ target, key, storeKey string }{
		{"http://Example.COM/items/42",
			"#5:http1#3:GET#4:http#11:example.com#9:/items/42#0#17:X-Forwarded-Proto#1#5:https#15:Accept-Language#2#2:fr#2:en",
			"ns:{YdR1THsSS69YNL_og381xA}"},
		{"https://example.com/a%20b/c?z=1&a=2&a=1&e=",
			"#5:http1#3:GET#5:https#11:example.com#8:/a%20b/c#3#1:a#2#1:2#1:1#1:e#1#0:#1:z#1#1:1#17:X-Forwarded-Proto#1#5:https#15:Accept-Language#2#2:fr#2:en",
			"ns:{EdVg7-801uGGlVK7AxjuPA}"},
		{"http://example.com/x?q=1234567890123&long=" + strings.Repeat("0123456789", 10),
			"#5:http1#3:GET#4:http#11:example.com#2:/x#2#4:long#1#100:" + strings.Repeat("0123456789", 10) + "#1:q#1#13:1234567890123#17:X-Forwarded-Proto#1#5:https#15:Accept-Language#2#2:fr#2:en",
			"ns:{ylks6ECgOWO31M0vFXH6GQ}"},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		r.Header.Set("X-Forwarded-Proto", "https")
		r.Header.Add("Accept-Language", "fr")
		r.Header.Add("Accept-Language", "en")
		k, ok := p.requestKey(r)
		if !ok || k != tc.key {
			t.Errorf("requestKey(%s) = %q, %v, want %q", tc.target, k, ok, tc.key)
		}
		if got := storeKey("ns", k); got != tc.storeKey {
			t.Errorf("storeKey(%q) = %q, want %q", k, got, tc.storeKey)
		}
		// Twice through the memo: derived, then remembered.
		for range 2 {
			b, _ := p.appendRequestKey(nil, r, scanRequestHeaders(r.Header))
			if ukey, skey := c.keys.keys("ns", b); ukey != tc.key || skey != tc.storeKey {
				t.Errorf("keys(%s) = %q, %q, want %q, %q", tc.target, ukey, skey, tc.key, tc.storeKey)
			}
		}
	}
}

// TestKeyMemoNeverMixesKeys derives the keys of many more URLs than the
// memo has slots, from several goroutines at once, each time checking the
// store key against one derived without the memo: a slot taken over by
// another key must never answer for the old one.
func TestKeyMemoNeverMixesKeys(t *testing.T) {
	var m keyMemo
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 * keyMemoSlots {
				ukey := fmt.Sprintf("key-%d", (i*7+g)%(2*keyMemoSlots))
				gotU, gotS := m.keys("ns", []byte(ukey))
				if want := storeKey("ns", ukey); gotU != ukey || gotS != want {
					errs <- fmt.Sprintf("keys(%q) = %q, %q, want %q, %q", ukey, gotU, gotS, ukey, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestScanRequestHeadersMatchesLookups checks the one-pass scan against a
// lookup of every name it stands for, on header maps of every size: few
// headers (scanned) and more than there are names (looked up), with the
// names present in every combination of classes.
func TestScanRequestHeadersMatchesLookups(t *testing.T) {
	lookup := func(h http.Header) requestHeaders {
		var hs requestHeaders
		has := func(name string) bool { _, ok := h[name]; return ok }
		if has("Upgrade") {
			hs |= hasUpgrade
		}
		if has("Authorization") {
			hs |= hasAuthorization
		}
		if has("Range") {
			hs |= hasRange
		}
		for _, name := range bypassHeaders {
			if has(name) {
				hs |= hasBypass
			}
		}
		for _, name := range keyedHeaders {
			if has(name) {
				hs |= hasKeyed
			}
		}
		return hs
	}
	names := append([]string{"Upgrade", "Authorization", "Range"}, append(bypassHeaders, keyedHeaders...)...)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		h := http.Header{}
		for range rng.IntN(4) {
			h[names[rng.IntN(len(names))]] = []string{"x"}
		}
		for j := range rng.IntN(3 * len(headerClasses)) { // filler: small and large maps
			h[fmt.Sprintf("X-Filler-%d", j)] = []string{"y"}
		}
		if got, want := scanRequestHeaders(h), lookup(h); got != want {
			t.Fatalf("case %d, %d headers: scan %05b, lookups %05b", i, len(h), got, want)
		}
	}
}

// TestMemoArrivals checks the request gap a memo entry keeps for early
// refresh: unknown until a second request, then a moving average that
// follows the traffic, unmoved by a clock that does not advance, and
// started afresh when another key takes the slot over.
func TestMemoArrivals(t *testing.T) {
	var m keyMemo
	k := m.memoKeys("ns", []byte("k"))
	t0 := time.Unix(1000, 0)
	if g := k.arrived(t0); g != 0 {
		t.Fatalf("first request: gap %v, want 0 (unknown)", g)
	}
	if g := k.arrived(t0.Add(time.Second)); g != time.Second {
		t.Fatalf("second request a second on: gap %v, want 1s", g)
	}
	if g := k.arrived(t0.Add(time.Second)); g != time.Second {
		t.Errorf("a request at the same instant: gap %v, want 1s unchanged", g)
	}
	now := t0.Add(time.Second)
	var g time.Duration
	for range 100 { // the traffic turns hot: a request every 10 ms
		now = now.Add(10 * time.Millisecond)
		g = k.arrived(now)
	}
	if g < 10*time.Millisecond || g > 11*time.Millisecond {
		t.Errorf("after 100 requests 10 ms apart: gap %v, want about 10ms", g)
	}
	if m.memoKeys("ns", []byte("k")) != k {
		t.Fatal("the memo lost the key")
	}
	fresh := &memoKeys{ukey: "other"}
	if g := fresh.arrived(now); g != 0 {
		t.Errorf("a new entry: gap %v, want 0", g)
	}
}

// TestRefreshWindow checks the bounds of a sparse key's wider refresh
// window (see refreshWindow): a hot or unknown key keeps the window
// proper; a sparse one gets refreshRequests gaps, never more than half
// the lifetime nor the fetch timeout more than the window proper.
func TestRefreshWindow(t *testing.T) {
	store := NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	c := New(store, WithFetchTimeout(3*time.Second))
	const fetched = 200 * time.Millisecond // window proper at beta 2: 500 ms
	for _, tc := range []struct {
		name     string
		ttl, gap time.Duration
		want     time.Duration
	}{
		{"unknown", 2 * time.Second, 0, 500 * time.Millisecond},
		{"hot", 2 * time.Second, 50 * time.Millisecond, 500 * time.Millisecond},
		{"sparse", 10 * time.Second, 100 * time.Millisecond, 800 * time.Millisecond},
		{"half the lifetime", 2 * time.Second, 400 * time.Millisecond, time.Second},
		{"the fetch timeout", time.Hour, time.Minute, 3500 * time.Millisecond},
	} {
		if got := c.refreshWindow(tc.ttl, fetched, 2, tc.gap); got != tc.want {
			t.Errorf("%s: refreshWindow(%v, %v, 2, %v) = %v, want %v", tc.name, tc.ttl, fetched, tc.gap, got, tc.want)
		}
	}
}
