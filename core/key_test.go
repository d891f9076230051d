package core

import (
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

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
	for _, same := range [][]string{
		{"Accept-Encoding", "gzip,br", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip", "Accept-Encoding", "br", "Accept-Language", "de"},
		{"Accept-Encoding", " gzip ,  br ", "Accept-Language", "de", "Cookie-Free", "x"},
	} {
		if key("g1", same...) != base {
			t.Errorf("%q selects another variant than gzip, br / de", same)
		}
	}
	for _, other := range [][]string{
		{"Accept-Encoding", "br, gzip", "Accept-Language", "de"},
		{"Accept-Encoding", "gzip, br"},
		{"Accept-Encoding", "gzip, br", "Accept-Language", ""},
		{"Accept-Encoding", "gzip, br", "Accept-Language", "fr"},
	} {
		if key("g1", other...) == base {
			t.Errorf("%q selects the same variant as gzip, br / de", other)
		}
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
