package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
	"github.com/flightcache/flightcache/core/repotest"
)

// taggedHandler answers its first GET with v1 once released, every later
// GET with v2 at once, fresh for an hour and tagged "t1 shared".
type taggedHandler struct {
	blockedHandler
}

func newTaggedHandler() *taggedHandler {
	return &taggedHandler{blockedHandler{started: make(chan struct{}), release: make(chan struct{})}}
}

func (h *taggedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Surrogate-Key", "t1 shared")
	h.blockedHandler.ServeHTTP(w, r)
}

// TestTagPurgeFencesFillInFlight is the tag purge's guarantee: a fill in
// process A whose handler (or fetch) began before a tag purge in process
// B returns, after it, a value carrying the tag. Requests that start after
// the purge, in A (which may join the fill) or B, get the new version; the
// old one is not stored. Through the HTTP layer and DoTagged, with and
// without the local tier, on every store.
func TestTagPurgeFencesFillInFlight(t *testing.T) {
	for _, tier := range []bool{false, true} {
		t.Run(fmt.Sprintf("tier=%v", tier), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
				newPair := func(t *testing.T) (a, b *core.Cache, joined <-chan struct{}) {
					opts := []core.Option{namespace(t), patientStore}
					if tier {
						opts = append(opts, core.WithLocalTier(1<<20))
					}
					a, b = core.New(newStore(), opts...), core.New(newStore(), opts...)
					joined = onJoin(a)
					return a, b, joined
				}
				t.Run("http", func(t *testing.T) {
					a, b, joined := newPair(t)
					h := newTaggedHandler()
					const target = "http://example.com/p?id=1"
					leader := goServe(t, a, http.MethodGet, target, h.ServeHTTP)
					<-h.started
					if err := b.PurgeTags(context.Background(), "t1"); err != nil {
						t.Fatalf("PurgeTags: %v", err)
					}
					lateA := goServe(t, a, http.MethodGet, target, h.ServeHTTP)
					lateB := goServe(t, b, http.MethodGet, target, h.ServeHTTP)
					<-joined // the late GET in A joined the fill in flight
					close(h.release)
					if got := <-leader; got != "v1" {
						t.Errorf("leader, which asked before the purge, got %q, want v1", got)
					}
					for name, ch := range map[string]<-chan string{"A": lateA, "B": lateB} {
						if got := <-ch; got != "v2" {
							t.Errorf("GET in %s started after the purge got %q, want v2", name, got)
						}
					}
					for _, c := range []*core.Cache{a, b} {
						w := serveHTTP(t, c, http.MethodGet, target, h.ServeHTTP)
						if got := w.Body.String(); got != "v2" {
							t.Errorf("a later GET got %q, want v2: the fenced v1 was stored", got)
						}
						if v := w.Header().Values("Surrogate-Key"); v != nil {
							t.Errorf("a later GET carried Surrogate-Key %q, want it removed", v)
						}
					}
					if n := h.gets.Load(); n != 2 {
						t.Errorf("handler ran %d GETs, want 2 (the fenced fill and one refill)", n)
					}
					if n := a.Stats().FencedCommits.Load(); n != 1 {
						t.Errorf("Stats().FencedCommits = %d, want 1", n)
					}
				})
				t.Run("do", func(t *testing.T) {
					a, b, joined := newPair(t)
					o := newBlockedFetch()
					fetch := func(ctx context.Context) ([]byte, []string, time.Duration, error) {
						v, ttl, err := o.fetch(ctx)
						return v, []string{"t1", "shared"}, ttl, err
					}
					leader := goDoTagged(a, "k", fetch)
					<-o.started
					if err := b.PurgeTags(context.Background(), "t1"); err != nil {
						t.Fatalf("PurgeTags: %v", err)
					}
					lateA, lateB := goDoTagged(a, "k", fetch), goDoTagged(b, "k", fetch)
					<-joined
					close(o.release)
					if got := <-leader; got != "v1" {
						t.Errorf("leader, which asked before the purge, got %q, want v1", got)
					}
					for name, ch := range map[string]<-chan string{"A": lateA, "B": lateB} {
						if got := <-ch; got != "v2" {
							t.Errorf("DoTagged in %s started after the purge got %q, want v2", name, got)
						}
					}
					for _, c := range []*core.Cache{a, b} {
						if got, err := c.DoTagged(context.Background(), "k", fetch); err != nil || string(got) != "v2" {
							t.Errorf("a later DoTagged = (%q, %v), want v2: the fenced v1 was stored", got, err)
						}
					}
					if n := o.calls.Load(); n != 2 {
						t.Errorf("origin called %d times, want 2 (the fenced fill and one refill)", n)
					}
				})
			})
		})
	}
}

func goDoTagged(c *core.Cache, key string, fetch func(context.Context) ([]byte, []string, time.Duration, error)) <-chan string {
	ch := make(chan string, 1)
	go func() {
		v, err := c.DoTagged(context.Background(), key, fetch)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(v)
	}()
	return ch
}

// versionedHandler answers GET /<name> with "<name>-<n>", n counting the
// handler's runs for that path, tagged with tags[name].
type versionedHandler struct {
	tags map[string]string
	runs map[string]*atomic.Int64
}

func newVersionedHandler(tags map[string]string) *versionedHandler {
	h := &versionedHandler{tags: tags, runs: map[string]*atomic.Int64{}}
	for name := range tags {
		h.runs[name] = &atomic.Int64{}
	}
	return h
}

func (h *versionedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if tags := h.tags[name]; tags != "" {
		w.Header().Set("Surrogate-Key", tags)
	}
	w.Header().Set("Cache-Control", "max-age=3600")
	fmt.Fprintf(w, "%s-%d", name, h.runs[name].Add(1))
}

// TestTagPurgeInvalidatesEveryTaggedEntry purges one tag in one process:
// every entry carrying it, among several URLs and Do keys, is refilled in
// every process, and no other entry is.
func TestTagPurgeInvalidatesEveryTaggedEntry(t *testing.T) {
	for _, tier := range []bool{false, true} {
		t.Run(fmt.Sprintf("tier=%v", tier), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
				opts := []core.Option{namespace(t), patientStore}
				if tier {
					opts = append(opts, core.WithLocalTier(1<<20))
				}
				a, b := core.New(newStore(), opts...), core.New(newStore(), opts...)
				h := newVersionedHandler(map[string]string{
					"a": "x", "b": "y  x", "c": "y", "d": "", "e": "xx",
				})
				get := func(c *core.Cache, name string) string {
					t.Helper()
					return serveHTTP(t, c, http.MethodGet, "http://example.com/"+name, h.ServeHTTP).Body.String()
				}
				var doRuns atomic.Int64
				doTagged := func(c *core.Cache, key string, tags ...string) string {
					t.Helper()
					v, err := c.DoTagged(context.Background(), key, func(context.Context) ([]byte, []string, time.Duration, error) {
						return []byte(key + "-" + strconv.FormatInt(doRuns.Add(1), 10)), tags, time.Hour, nil
					})
					if err != nil {
						t.Fatalf("DoTagged(%q): %v", key, err)
					}
					return string(v)
				}
				before := map[string]string{}
				for _, name := range []string{"a", "b", "c", "d", "e"} {
					before[name] = get(a, name)
				}
				before["k1"] = doTagged(a, "k1", "x")
				before["k2"] = doTagged(a, "k2", "z")
				// Served from the store in both processes.
				for _, c := range []*core.Cache{a, b} {
					for _, name := range []string{"a", "b", "c", "d", "e"} {
						if got := get(c, name); got != before[name] {
							t.Fatalf("GET /%s before the purge = %q, want the stored %q", name, got, before[name])
						}
					}
				}
				if err := b.PurgeTags(context.Background(), "x"); err != nil {
					t.Fatalf("PurgeTags(x): %v", err)
				}
				purged := map[string]bool{"a": true, "b": true, "k1": true}
				for _, c := range []*core.Cache{a, b} {
					for _, name := range []string{"a", "b", "c", "d", "e"} {
						got := get(c, name)
						if changed := got != before[name]; changed != purged[name] {
							t.Errorf("GET /%s after purging x = %q (before: %q): changed %v, want %v", name, got, before[name], changed, purged[name])
						}
					}
					for key, tag := range map[string]string{"k1": "x", "k2": "z"} {
						got := doTagged(c, key, tag)
						if changed := got != before[key]; changed != purged[key] {
							t.Errorf("DoTagged(%q) after purging x = %q (before: %q): changed %v, want %v", key, got, before[key], changed, purged[key])
						}
					}
				}
				for name, want := range map[string]int64{"a": 2, "b": 2, "c": 1, "d": 1, "e": 1} {
					if n := h.runs[name].Load(); n != want {
						t.Errorf("handler ran %d times for /%s, want %d", n, name, want)
					}
				}
			})
		})
	}
}

// TestTagBounds covers what responses may carry as tags: the header is
// removed from what clients get (unless kept), request-derived tags add
// up with the header's, and a response past the bounds is sent to its
// request and not stored.
func TestTagBounds(t *testing.T) {
	many := func(n int) string {
		tags := make([]string, n)
		for i := range tags {
			tags[i] = "tag-" + strconv.Itoa(i)
		}
		return strings.Join(tags, " ")
	}
	tests := []struct {
		name   string
		header []string // Surrogate-Key lines
		opts   []core.Option
		route  []core.PolicyOption
		stored bool
		sent   bool   // Surrogate-Key reaches the client
		purge  string // a tag whose purge must reach the stored response
	}{
		{name: "one", header: []string{"a"}, stored: true, purge: "a"},
		{name: "lines and spaces", header: []string{"  a\tb ", "c"}, stored: true, purge: "c"},
		{name: "32", header: []string{many(32)}, stored: true, purge: "tag-31"},
		{name: "duplicates", header: []string{strings.Repeat("same ", 100)}, stored: true, purge: "same"},
		{name: "longest", header: []string{strings.Repeat("l", core.MaxTagLength)}, stored: true, purge: strings.Repeat("l", core.MaxTagLength)},
		{name: "33", header: []string{many(33)}},
		{name: "33 over two lines", header: []string{many(20), many(33)}},
		{name: "too long", header: []string{"a " + strings.Repeat("l", core.MaxTagLength+1)}},
		{name: "not ascii", header: []string{"caf\u00e9"}},
		{name: "control byte", header: []string{"a\x01b"}},
		{name: "huge header", header: []string{strings.Repeat("x", 1<<20)}},
		{name: "huge list", header: []string{strings.Repeat("t ", 1<<16) + many(40)}},
		{name: "from the request", route: []core.PolicyOption{core.Tags(func(r *http.Request) []string {
			return []string{"user-" + r.URL.Query().Get("id")}
		})}, stored: true, purge: "user-7"},
		{name: "from both", header: []string{"h"}, route: []core.PolicyOption{core.Tags(func(*http.Request) []string {
			return []string{"r"}
		})}, stored: true, purge: "h"},
		{name: "over the bound together", header: []string{many(30)}, route: []core.PolicyOption{core.Tags(func(*http.Request) []string {
			return []string{"r1", "r2", "r3"}
		})}},
		{name: "invalid from the request", route: []core.PolicyOption{core.Tags(func(*http.Request) []string {
			return []string{""}
		})}},
		{name: "kept header", header: []string{"a b"}, opts: []core.Option{core.KeepTagHeader()}, stored: true, sent: true, purge: "b"},
		{name: "other header", header: []string{"a"}, opts: []core.Option{core.WithTagHeader("surrogate-key-2")}, stored: true, sent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := core.NewMemoryStore(0)
			defer store.Close()
			c := core.New(store, append([]core.Option{namespace(t)}, tt.opts...)...)
			var runs atomic.Int64
			h := func(w http.ResponseWriter, r *http.Request) {
				for _, line := range tt.header {
					w.Header().Add("Surrogate-Key", line)
				}
				w.Header().Set("Cache-Control", "max-age=3600")
				fmt.Fprintf(w, "v%d", runs.Add(1))
			}
			const target = "http://example.com/p?id=7"
			for i := range 2 {
				w := serveHTTP(t, c, http.MethodGet, target, h, tt.route...)
				if w.Code != http.StatusOK || w.Body.String() == "" {
					t.Fatalf("GET #%d = %d %q, want 200 with a body", i, w.Code, w.Body.String())
				}
				got := w.Header().Values("Surrogate-Key")
				if tt.sent && !slices.Equal(got, tt.header) || !tt.sent && got != nil {
					t.Errorf("GET #%d sent Surrogate-Key %.40q, want it sent: %v", i, got, tt.sent)
				}
				if i == 0 && !tt.stored {
					if cs := w.Header().Get(core.CacheStatusHeader); !strings.Contains(cs, "detail=tags") || w.Header().Get("X-Cache") != "BYPASS" {
						t.Errorf("GET #0 of an unstorable response: X-Cache %q, Cache-Status %q; want BYPASS with detail=tags", w.Header().Get("X-Cache"), cs)
					}
				}
			}
			want := int64(1)
			if !tt.stored {
				want = 2
			}
			if n := runs.Load(); n != want {
				t.Fatalf("handler ran %d times for 2 GETs, want %d (stored: %v)", n, want, tt.stored)
			}
			if tt.purge == "" {
				return
			}
			if err := c.PurgeTags(context.Background(), tt.purge); err != nil {
				t.Fatal(err)
			}
			if got := serveHTTP(t, c, http.MethodGet, target, h, tt.route...).Body.String(); got != "v2" {
				t.Errorf("GET after PurgeTags(%.20q) = %q, want v2", tt.purge, got)
			}
		})
	}
}

// TestTagHeaderRemovedFromPassedThroughResponses checks that responses the
// handler writes straight to the client (not cached, or streamed) lose
// the tag header too.
func TestTagHeaderRemovedFromPassedThroughResponses(t *testing.T) {
	c := core.New(memoryStore(t), namespace(t))
	tagged := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Surrogate-Key", "a")
		if r.URL.Query().Get("stream") != "" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
		}
		fmt.Fprint(w, "ok")
	}
	for _, tt := range []struct {
		name, method, target string
		route                []core.PolicyOption
	}{
		{"no-cache route", http.MethodGet, "http://example.com/a", []core.PolicyOption{core.NoCache()}},
		{"unsafe method", http.MethodPost, "http://example.com/a", nil},
		{"streamed", http.MethodGet, "http://example.com/a?stream=1", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := serveHTTP(t, c, tt.method, tt.target, tagged, tt.route...)
			if v := w.Header().Values("Surrogate-Key"); v != nil || w.Body.String() != "ok" {
				t.Errorf("%s %s = %q with Surrogate-Key %q, want ok without it", tt.method, tt.target, w.Body.String(), v)
			}
		})
	}
}

// TestPurgeTagsErrors: invalid tags are an error before any store call;
// an unreachable store is an error reported as OpInvalidate.
func TestPurgeTagsErrors(t *testing.T) {
	mr := miniredis.RunT(t)
	var log errorLog
	c := core.New(core.NewRedisStore(newClient(t, mr.Addr())), namespace(t), core.WithoutBreaker(),
		core.WithObserver(log.observe))
	for _, tag := range []string{"", "a b", strings.Repeat("l", core.MaxTagLength+1), "\u00e9"} {
		if err := c.PurgeTags(context.Background(), "ok", tag); err == nil || !strings.HasPrefix(err.Error(), "flightcache: ") {
			t.Errorf("PurgeTags(%.20q) error = %v, want a flightcache: error", tag, err)
		}
	}
	if err := c.PurgeTags(context.Background()); err != nil {
		t.Errorf("PurgeTags() = %v, want nil", err)
	}
	if ops := log.ops(); len(ops) != 0 {
		t.Errorf("bad input reported %v to the observer, want nothing", ops)
	}
	mr.Close()
	if err := c.PurgeTags(context.Background(), "t"); err == nil {
		t.Error("PurgeTags with the store down = nil, want an error")
	}
	if ops := log.ops(); !slices.Equal(ops, []string{core.OpInvalidate}) {
		t.Errorf("observer saw %v, want [%s]", ops, core.OpInvalidate)
	}
}

// TestTagPurgeCostIsConstant counts the Redis commands of one tag purge
// over 10 tagged entries and over 100,000: the same commands.
func TestTagPurgeCostIsConstant(t *testing.T) {
	mr := miniredis.RunT(t)
	commandsFor := func(entries int) []string {
		t.Helper()
		log := &repotest.CommandLog{}
		rdb := newClient(t, mr.Addr())
		rdb.AddHook(log)
		store := core.NewRedisStore(rdb)
		defer store.Close()
		c := core.New(store, namespace(t), patientStore)
		// Entries as commits store them, tagged "t" (and one more tag).
		for i := range entries {
			key, enc := core.EncodeTagged(c, "k"+strconv.Itoa(i), []byte("old"), time.Hour, "t", "u"+strconv.Itoa(i%7))
			mr.Set(key, string(enc))
		}
		fetch := func(context.Context) ([]byte, []string, time.Duration, error) {
			return []byte("new"), []string{"t"}, time.Hour, nil
		}
		for _, i := range []int{0, entries - 1} {
			if got, err := c.DoTagged(context.Background(), "k"+strconv.Itoa(i), fetch); err != nil || string(got) != "old" {
				t.Fatalf("DoTagged(k%d) before the purge = (%q, %v), want the stored old", i, got, err)
			}
		}
		log.Reset()
		if err := c.PurgeTags(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
		// The subscription's connection handshake (the purge listens for
		// the local tiers' answers) is not the purge's cost.
		cmds := slices.DeleteFunc(log.Names(), func(n string) bool { return n == "hello" || n == "client" })
		for _, i := range []int{0, entries / 2, entries - 1} {
			if got, err := c.DoTagged(context.Background(), "k"+strconv.Itoa(i), fetch); err != nil || string(got) != "new" {
				t.Errorf("DoTagged(k%d) after the purge = (%q, %v), want new", i, got, err)
			}
		}
		return cmds
	}
	small, large := commandsFor(10), commandsFor(100_000)
	t.Logf("one tag purge: %v", small)
	if !slices.Equal(small, large) {
		t.Errorf("a tag purge over 10 entries sent %v, over 100,000 %v: want the same", small, large)
	}
	// ZINCRBY, ZADD GT, the PUBLISH for the local tiers, and the
	// registry of tiers read in one MULTI (TIME, ZRANGE).
	want := []string{"zincrby", "zadd", "publish", "multi", "time", "zrange", "exec"}
	if !slices.Equal(small, want) {
		t.Errorf("a purge of one tag sent %v, want %v", small, want)
	}
}

// TestTagPurgeIsHard checks that a tag-purged entry is never served
// stale: not while it is refreshed (stale-while-revalidate), not when the
// refresh fails (stale-if-error).
func TestTagPurgeIsHard(t *testing.T) {
	for _, failing := range []bool{false, true} {
		t.Run(fmt.Sprintf("refresh-fails=%v", failing), func(t *testing.T) {
			c := core.New(memoryStore(t), namespace(t))
			clock := testhook.NewClock(time.Now())
			testhook.SetClock(c, clock.Now)
			var runs atomic.Int64
			h := func(w http.ResponseWriter, r *http.Request) {
				n := runs.Add(1)
				if n > 1 && failing {
					w.WriteHeader(http.StatusInternalServerError)
					return
				}
				w.Header().Set("Surrogate-Key", "x")
				w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=3600, stale-if-error=3600")
				fmt.Fprintf(w, "v%d", n)
			}
			const target = "http://example.com/p"
			serveHTTP(t, c, http.MethodGet, target, h)
			clock.Advance(2 * time.Second)
			if err := c.PurgeTags(context.Background(), "x"); err != nil {
				t.Fatal(err)
			}
			w := serveHTTP(t, c, http.MethodGet, target, h)
			if w.Body.String() == "v1" || w.Header().Get("X-Cache") == "STALE" {
				t.Errorf("GET after the purge = %d %q (X-Cache %q): the purged entry was served stale", w.Code, w.Body.String(), w.Header().Get("X-Cache"))
			}
			if runs.Load() != 2 {
				t.Errorf("handler ran %d times, want 2", runs.Load())
			}
		})
	}
}

// TestTagPurgeReachesEveryVariant purges a tag carried by the variants of
// a URL whose responses vary on Accept-Language: each variant refills.
func TestTagPurgeReachesEveryVariant(t *testing.T) {
	c := core.New(memoryStore(t), namespace(t))
	var runs atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Surrogate-Key", "page")
		w.Header().Set("Cache-Control", "max-age=3600")
		fmt.Fprintf(w, "%s-%d", r.Header.Get("Accept-Language"), runs.Add(1))
	}
	get := func(lang string) string {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "http://example.com/p", nil)
		r.Header.Set("Accept-Language", lang)
		if err := c.Middleware().Serve(w, r, "", func(w http.ResponseWriter, r *http.Request) error { h(w, r); return nil }); err != nil {
			t.Fatal(err)
		}
		return w.Body.String()
	}
	before := map[string]string{"en": get("en"), "fr": get("fr")}
	for lang, want := range before {
		if got := get(lang); got != want {
			t.Fatalf("GET in %s = %q, want the stored %q", lang, got, want)
		}
	}
	if err := c.PurgeTags(context.Background(), "page"); err != nil {
		t.Fatal(err)
	}
	for lang, old := range before {
		if got := get(lang); got == old {
			t.Errorf("GET in %s after the purge = %q, the purged variant", lang, got)
		}
	}
	if n := runs.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4", n)
	}
}

// memoryStore returns a memory store closed when t ends.
func memoryStore(t *testing.T) *core.MemoryStore {
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRequestTagsDecideForOneRequest is the attack on request-derived
// tags: an anonymous request whose tags exceed the bounds (a long value
// of a query parameter the key ignores) is served uncached, and does not
// switch caching off for the URL's other requests.
func TestRequestTagsDecideForOneRequest(t *testing.T) {
	c := core.New(memoryStore(t), namespace(t))
	var runs atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		fmt.Fprintf(w, "v%d", runs.Add(1))
	}
	route := []core.PolicyOption{
		core.KeyQuery("id"),
		core.Tags(func(r *http.Request) []string { return []string{"ref-" + r.URL.Query().Get("ref")} }),
	}
	attack := serveHTTP(t, c, http.MethodGet, "http://example.com/p?id=1&ref="+strings.Repeat("x", 200), h, route...)
	if attack.Body.String() != "v1" || !strings.Contains(attack.Header().Get(core.CacheStatusHeader), "detail=tags") {
		t.Fatalf("request with an oversized tag = %q, Cache-Status %q; want v1, not stored (detail=tags)", attack.Body.String(), attack.Header().Get(core.CacheStatusHeader))
	}
	for i := range 3 {
		w := serveHTTP(t, c, http.MethodGet, "http://example.com/p?id=1&ref=home", h, route...)
		if got, want := w.Body.String(), "v2"; got != want {
			t.Errorf("ordinary GET #%d after the attack = %q (X-Cache %q), want %q: stored once, then hits", i, got, w.Header().Get("X-Cache"), want)
		}
	}
}

// failingTags is a store whose tag counters cannot be read while fail is
// set.
type failingTags struct {
	core.Store
	fail atomic.Bool
}

func (s *failingTags) TagVersions(ctx context.Context, keys []string) ([]int64, error) {
	if s.fail.Load() {
		return nil, errors.New("tag counters unreachable")
	}
	return s.Store.TagVersions(ctx, keys)
}

// TestTagReadFailureFailsOpen: when the tag counters cannot be read, a
// tagged value is served uncached and the failure reported; an untagged
// one is unaffected; once they can, caching resumes.
func TestTagReadFailureFailsOpen(t *testing.T) {
	store := &failingTags{Store: memoryStore(t)}
	var log errorLog
	c := core.New(store, namespace(t), core.WithoutBreaker(), core.WithObserver(log.observe))
	var runs atomic.Int64
	fetch := func(tags ...string) func(context.Context) ([]byte, []string, time.Duration, error) {
		return func(context.Context) ([]byte, []string, time.Duration, error) {
			return []byte("v" + strconv.FormatInt(runs.Add(1), 10)), tags, time.Hour, nil
		}
	}
	if got, err := c.DoTagged(context.Background(), "hit", fetch("t")); err != nil || string(got) != "v1" {
		t.Fatalf("DoTagged = (%q, %v), want v1", got, err)
	}
	store.fail.Store(true)
	// A stored tagged value whose tags cannot be checked: refetched.
	if got, err := c.DoTagged(context.Background(), "hit", fetch("t")); err != nil || string(got) != "v2" {
		t.Errorf("DoTagged on a stored value, counters down = (%q, %v), want a refetched v2", got, err)
	}
	// A new tagged value: served, not stored.
	for i, want := range []string{"v3", "v4"} {
		if got, err := c.DoTagged(context.Background(), "new", fetch("t")); err != nil || string(got) != want {
			t.Errorf("DoTagged #%d on a new key, counters down = (%q, %v), want %s (uncached)", i, got, err, want)
		}
	}
	if got, _ := c.DoTagged(context.Background(), "untagged", fetch()); string(got) != "v5" {
		t.Errorf("untagged DoTagged = %q, want v5", got)
	}
	if got, _ := c.DoTagged(context.Background(), "untagged", fetch()); string(got) != "v5" {
		t.Errorf("untagged DoTagged again = %q, want the stored v5", got)
	}
	if ops := log.ops(); len(ops) == 0 || slices.ContainsFunc(ops, func(op string) bool { return op != core.OpGet }) {
		t.Errorf("observer saw %v, want OpGet failures only", ops)
	}
	store.fail.Store(false)
	for i := range 2 {
		if got, _ := c.DoTagged(context.Background(), "new", fetch("t")); string(got) != "v6" {
			t.Errorf("DoTagged #%d once the counters are back = %q, want v6 stored", i, got)
		}
	}
}
