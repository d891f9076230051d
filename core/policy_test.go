package core

import (
	"testing"
	"time"
)

func TestPolicyFor(t *testing.T) {
	s := NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	c := New(s)
	// Each table entry gets a TTL of its own, so the TTL of the policy
	// policyFor returns tells which entry it came from.
	m := c.Middleware(TTL(time.Hour), MaxBodySize(512), PerRoute(map[string][]PolicyOption{
		"/products/:id":        {TTL(1 * time.Second)},
		"/admin/*":             {TTL(2 * time.Second)},
		"/admin/reports/*":     {TTL(3 * time.Second)},
		"/admin/stats":         {TTL(4 * time.Second)},
		"GET /items/{id}":      {TTL(5 * time.Second)},
		"GET /static/*":        {TTL(6 * time.Second)},
		"/admin/reports/daily": {NoCache()},
	}))
	for _, tc := range []struct {
		name    string
		pattern string
		want    time.Duration
		noCache bool
	}{
		{"Exact", "/products/:id", 1 * time.Second, false},
		{"ExactNetHTTP", "GET /items/{id}", 5 * time.Second, false},
		{"ExactIsNotAPrefix", "/products/:id/reviews", time.Hour, false},
		{"Prefix", "/admin/users", 2 * time.Second, false},
		{"PrefixMatchesItsOwnStem", "/admin/", 2 * time.Second, false},
		{"PrefixNeedsItsSlash", "/admin", time.Hour, false},
		{"LongestPrefixWins", "/admin/reports/weekly", 3 * time.Second, false},
		{"ExactBeatsPrefix", "/admin/stats", 4 * time.Second, false},
		{"ExactBeatsLongerPrefix", "/admin/reports/daily", time.Hour, true},
		{"PrefixNetHTTP", "GET /static/{file...}", 6 * time.Second, false},
		{"PrefixIsCaseSensitive", "/Admin/users", time.Hour, false},
		{"NoMatchIsTheDefault", "/other", time.Hour, false},
		{"EmptyPatternIsTheDefault", "", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := m.policyFor(tc.pattern)
			if p.ttl != tc.want || p.noCache != tc.noCache {
				t.Errorf("policyFor(%q): ttl %v, noCache %v; want %v, %v", tc.pattern, p.ttl, p.noCache, tc.want, tc.noCache)
			}
			// A route's options apply on top of the middleware's.
			if p.maxBody != 512 {
				t.Errorf("policyFor(%q).maxBody = %d, want the middleware's 512", tc.pattern, p.maxBody)
			}
			if p.table != nil {
				t.Errorf("policyFor(%q) kept a route table", tc.pattern)
			}
		})
	}
}

func TestPolicyForStarCoversEveryPattern(t *testing.T) {
	s := NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	m := New(s).Middleware(PerRoute(map[string][]PolicyOption{
		"*":      {TTL(time.Second)},
		"/exact": {TTL(2 * time.Second)},
	}))
	for _, tc := range []struct {
		name    string
		pattern string
		want    time.Duration
	}{
		{"Any", "/anything", time.Second},
		{"Empty", "", time.Second},
		{"ExactStillWins", "/exact", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := m.policyFor(tc.pattern).ttl; got != tc.want {
				t.Errorf("policyFor(%q).ttl = %v, want %v", tc.pattern, got, tc.want)
			}
		})
	}
}

func TestPolicyForWithoutTable(t *testing.T) {
	s := NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	c := New(s, TTL(10*time.Second))
	for _, tc := range []struct {
		name string
		opts []PolicyOption
		want time.Duration
	}{
		{"CacheDefault", nil, 10 * time.Second},
		{"MiddlewareOption", []PolicyOption{TTL(time.Minute)}, time.Minute},
		{"LastOptionWins", []PolicyOption{TTL(time.Minute), TTL(2 * time.Minute)}, 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := c.Middleware(tc.opts...)
			for _, pattern := range []string{"", "/r", "GET /r"} {
				if got := m.policyFor(pattern).ttl; got != tc.want {
					t.Errorf("policyFor(%q).ttl = %v, want %v", pattern, got, tc.want)
				}
			}
		})
	}
}
