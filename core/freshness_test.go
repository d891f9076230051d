package core

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// directives returns a parsed Cache-Control with every delta-seconds
// directive absent, changed by set.
func directives(set func(cc *cacheControl)) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1, staleWhileRevalidate: -1, staleIfError: -1}
	if set != nil {
		set(&cc)
	}
	return cc
}

// headerOf builds a header from name, value pairs; a name may repeat to
// give a field several lines.
func headerOf(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseCacheControl(t *testing.T) {
	const year = 365 * 24 * 3600
	for _, tc := range []struct {
		name  string
		lines []string // Cache-Control field lines
		want  cacheControl
	}{
		{"Absent", nil, directives(nil)},
		{"Empty", []string{""}, directives(nil)},
		{"NoStore", []string{"no-store"}, directives(func(cc *cacheControl) { cc.noStore = true })},
		{"NoCache", []string{"no-cache"}, directives(func(cc *cacheControl) { cc.noCache = true })},
		{"NoCacheWithFields", []string{`no-cache="Set-Cookie"`}, directives(func(cc *cacheControl) { cc.noCache = true })},
		{"Private", []string{"private"}, directives(func(cc *cacheControl) { cc.private = true })},
		{"PrivateWithFields", []string{`private="X-User"`}, directives(func(cc *cacheControl) { cc.private = true })},
		{"Public", []string{"public"}, directives(func(cc *cacheControl) { cc.public = true })},
		{"MustRevalidate", []string{"must-revalidate"}, directives(func(cc *cacheControl) { cc.mustRevalidate = true })},
		{"ProxyRevalidate", []string{"proxy-revalidate"}, directives(func(cc *cacheControl) { cc.proxyRevalidate = true })},
		{"MaxAge", []string{"max-age=60"}, directives(func(cc *cacheControl) { cc.maxAge = 60 })},
		{"MaxAgeZero", []string{"max-age=0"}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"SMaxAge", []string{"s-maxage=30"}, directives(func(cc *cacheControl) { cc.sMaxAge = 30 })},
		{"StaleWhileRevalidate", []string{"stale-while-revalidate=10"}, directives(func(cc *cacheControl) { cc.staleWhileRevalidate = 10 })},
		{"StaleIfError", []string{"stale-if-error=20"}, directives(func(cc *cacheControl) { cc.staleIfError = 20 })},
		{"Several", []string{"public, max-age=60, s-maxage=30"}, directives(func(cc *cacheControl) { cc.public, cc.maxAge, cc.sMaxAge = true, 60, 30 })},
		{"SeveralLines", []string{"public", "max-age=60"}, directives(func(cc *cacheControl) { cc.public, cc.maxAge = true, 60 })},
		{"CaseInsensitiveNames", []string{"Max-Age=60, NO-STORE"}, directives(func(cc *cacheControl) { cc.maxAge, cc.noStore = 60, true })},
		{"Whitespace", []string{"  max-age=60 ,   public  "}, directives(func(cc *cacheControl) { cc.maxAge, cc.public = 60, true })},
		{"EmptyElements", []string{",,max-age=5,"}, directives(func(cc *cacheControl) { cc.maxAge = 5 })},
		{"QuotedSeconds", []string{`max-age="60"`}, directives(func(cc *cacheControl) { cc.maxAge = 60 })},
		{"DuplicateKeepsSmallest", []string{"max-age=60, max-age=30"}, directives(func(cc *cacheControl) { cc.maxAge = 30 })},
		{"DuplicateSmallestFirst", []string{"max-age=30, max-age=60"}, directives(func(cc *cacheControl) { cc.maxAge = 30 })},
		{"DuplicateAcrossLines", []string{"s-maxage=60", "s-maxage=10"}, directives(func(cc *cacheControl) { cc.sMaxAge = 10 })},
		{"DuplicateMalformedWins", []string{"max-age=60, max-age=x"}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"MalformedSeconds", []string{"max-age=abc"}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"NegativeSeconds", []string{"max-age=-5"}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"FractionalSeconds", []string{"max-age=1.5"}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"MissingSeconds", []string{"max-age="}, directives(func(cc *cacheControl) { cc.maxAge = 0 })},
		{"NoArgument", []string{"s-maxage"}, directives(func(cc *cacheControl) { cc.sMaxAge = 0 })},
		{"HugeSecondsCappedAtAYear", []string{"max-age=9999999999"}, directives(func(cc *cacheControl) { cc.maxAge = year })},
		{"UnknownIgnored", []string{"immutable, foo=bar, max-age=5"}, directives(func(cc *cacheControl) { cc.maxAge = 5 })},
		{"SpaceAroundEqualsIsNotTheDirective", []string{"max-age = 60"}, directives(nil)},
		{"ArgumentOnFlagIgnored", []string{"no-store=1"}, directives(func(cc *cacheControl) { cc.noStore = true })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Cache-Control": tc.lines}
			if got := parseCacheControl(h); got != tc.want {
				t.Errorf("parseCacheControl(%q) = %+v, want %+v", tc.lines, got, tc.want)
			}
		})
	}
}

func TestStorable(t *testing.T) {
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		name   string
		opts   []PolicyOption
		status int
		header []string // name, value pairs
		want   time.Duration
		stored bool
	}{
		// Status codes.
		{"200RouteTTL", nil, 200, nil, time.Minute, true},
		{"200ListedByStatuses", []PolicyOption{Statuses(200), TTL(time.Hour)}, 200, nil, time.Hour, true},
		{"203NotListed", nil, 203, nil, 0, false},
		{"203Listed", []PolicyOption{Statuses(200, 203)}, 203, nil, time.Minute, true},
		{"404HeuristicWithMaxAge", nil, 404, []string{"Cache-Control", "max-age=60"}, time.Minute, true},
		{"404HeuristicWithoutFreshness", nil, 404, nil, 0, false},
		{"410HeuristicWithExpires", nil, 410, []string{"Date", at(0), "Expires", at(time.Hour)}, time.Hour, true},
		{"500WithMaxAge", nil, 500, []string{"Cache-Control", "max-age=60"}, 0, false},
		{"500Listed", []PolicyOption{Statuses(500)}, 500, nil, time.Minute, true},
		{"206WithMaxAge", nil, 206, []string{"Cache-Control", "max-age=60"}, 0, false},
		{"302WithMaxAge", nil, 302, []string{"Cache-Control", "max-age=60"}, 0, false},
		{"301HeuristicWithMaxAge", nil, 301, []string{"Cache-Control", "max-age=60"}, time.Minute, true},

		// Explicit freshness.
		{"MaxAge", nil, 200, []string{"Cache-Control", "max-age=30"}, 30 * time.Second, true},
		{"MaxAgeZero", nil, 200, []string{"Cache-Control", "max-age=0"}, 0, false},
		{"SMaxAgeBeatsMaxAge", nil, 200, []string{"Cache-Control", "max-age=60, s-maxage=10"}, 10 * time.Second, true},
		{"SMaxAgeBeatsMaxAgeEitherOrder", nil, 200, []string{"Cache-Control", "s-maxage=10, max-age=60"}, 10 * time.Second, true},
		{"SMaxAgeZeroBeatsMaxAge", nil, 200, []string{"Cache-Control", "s-maxage=0, max-age=60"}, 0, false},
		{"MaxAgeBeatsExpires", nil, 200, []string{"Cache-Control", "max-age=30", "Date", at(0), "Expires", at(time.Hour)}, 30 * time.Second, true},
		{"ExpiresMinusDate", nil, 200, []string{"Date", at(-time.Hour), "Expires", at(0)}, time.Hour, true},
		{"ExpiresWithoutDate", nil, 200, []string{"Expires", at(2 * time.Hour)}, 2 * time.Hour, true},
		{"ExpiresPast", nil, 200, []string{"Expires", "Thu, 01 Jan 2015 00:00:00 GMT"}, 0, false},
		{"ExpiresEqualsDate", nil, 200, []string{"Date", at(0), "Expires", at(0)}, 0, false},
		{"ExpiresInvalid", nil, 200, []string{"Expires", "0"}, 0, false},
		{"ExpiresTwice", nil, 200, []string{"Expires", at(time.Hour), "Expires", at(time.Hour)}, 0, false},
		{"ExpiresInvalidDateUsesNow", nil, 200, []string{"Date", "yesterday", "Expires", at(time.Hour)}, time.Hour, true},
		{"HeuristicOnlyForListed", []PolicyOption{TTL(5 * time.Second)}, 200, nil, 5 * time.Second, true},

		// Cache-Control that forbids storing.
		{"NoStore", nil, 200, []string{"Cache-Control", "no-store"}, 0, false},
		{"NoStoreWithMaxAge", nil, 200, []string{"Cache-Control", "max-age=60, no-store"}, 0, false},
		{"NoCache", nil, 200, []string{"Cache-Control", "no-cache"}, 0, false},
		{"Private", nil, 200, []string{"Cache-Control", "private, max-age=60"}, 0, false},
		{"PrivateWithSMaxAge", nil, 200, []string{"Cache-Control", "private, s-maxage=60"}, 0, false},
		{"PublicWithoutFreshness", nil, 200, []string{"Cache-Control", "public"}, time.Minute, true},
		{"SetCookie", nil, 200, []string{"Cache-Control", "public, max-age=60", "Set-Cookie", "a=b"}, 0, false},
		{"VaryStar", nil, 200, []string{"Vary", "*"}, 0, false},
		{"VaryHeader", nil, 200, []string{"Vary", "Accept-Language"}, time.Minute, true},

		// Age it arrived with.
		{"AgeSubtracted", nil, 200, []string{"Cache-Control", "max-age=60", "Age", "10"}, 50 * time.Second, true},
		{"AgeFromRouteTTL", nil, 200, []string{"Age", "15"}, 45 * time.Second, true},
		{"AgeUsedUp", nil, 200, []string{"Cache-Control", "max-age=60", "Age", "60"}, 0, false},
		{"AgeMalformed", nil, 200, []string{"Cache-Control", "max-age=60", "Age", "7.5"}, 0, false},
		{"AgeTwice", nil, 200, []string{"Cache-Control", "max-age=60", "Age", "1", "Age", "2"}, 0, false},

		// Route options.
		{"ExplicitOnlyWithoutFreshness", []PolicyOption{ExplicitFreshnessOnly()}, 200, nil, 0, false},
		{"ExplicitOnlyWithMaxAge", []PolicyOption{ExplicitFreshnessOnly()}, 200, []string{"Cache-Control", "max-age=30"}, 30 * time.Second, true},
		{"IgnoreCacheControlUsesRouteTTL", []PolicyOption{IgnoreCacheControl(), TTL(time.Hour)}, 200, []string{"Cache-Control", "max-age=5"}, time.Hour, true},
		{"IgnoreCacheControlStillExpired", []PolicyOption{IgnoreCacheControl()}, 200, []string{"Cache-Control", "max-age=0"}, 0, false},
		{"IgnoreCacheControlStillNoStore", []PolicyOption{IgnoreCacheControl()}, 200, []string{"Cache-Control", "no-store"}, 0, false},
		{"IgnoreCacheControlStillPrivate", []PolicyOption{IgnoreCacheControl()}, 200, []string{"Cache-Control", "private"}, 0, false},

		// Surrogate-Control, addressed to gateway caches.
		{"SurrogateMaxAgeBeatsNoStore", nil, 200, []string{"Cache-Control", "no-store", "Surrogate-Control", "max-age=60"}, time.Minute, true},
		{"SurrogateMaxAgeBeatsMaxAge", nil, 200, []string{"Cache-Control", "max-age=5", "Surrogate-Control", "max-age=60"}, time.Minute, true},
		{"SurrogateNoStore", nil, 200, []string{"Cache-Control", "max-age=60", "Surrogate-Control", "no-store"}, 0, false},
		{"SurrogateTargeted", nil, 200, []string{"Surrogate-Control", "max-age=30;edge"}, 30 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaultPolicy()
			for _, o := range tc.opts {
				o.route(&p)
			}
			resp := entry.Response{Status: tc.status, Header: headerOf(tc.header...)}
			got, stored := p.storable(resp, now)
			if stored != tc.stored || (stored && got != tc.want) {
				t.Errorf("storable(%d %v) = %v, %v; want %v, %v", tc.status, tc.header, got, stored, tc.want, tc.stored)
			}
		})
	}
}

func TestSharedWithCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		cc   string
		want bool
	}{
		{"None", "", false},
		{"MaxAge", "max-age=60", false},
		{"Public", "public", true},
		{"MustRevalidate", "max-age=60, must-revalidate", true},
		{"SMaxAge", "s-maxage=60", true},
		{"SMaxAgeZero", "s-maxage=0", true},
		{"ProxyRevalidate", "proxy-revalidate", false},
		{"Private", "private", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sharedWithCredentials(headerOf("Cache-Control", tc.cc)); got != tc.want {
				t.Errorf("sharedWithCredentials(Cache-Control: %q) = %v, want %v", tc.cc, got, tc.want)
			}
		})
	}
}

func TestInitialAge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string // Age field lines; nil: absent
		want  time.Duration
		ok    bool
	}{
		{"Absent", nil, 0, true},
		{"Zero", []string{"0"}, 0, true},
		{"Seconds", []string{"30"}, 30 * time.Second, true},
		{"LeadingZeros", []string{"007"}, 7 * time.Second, true},
		{"Empty", []string{""}, 0, false},
		{"Negative", []string{"-1"}, 0, false},
		{"Plus", []string{"+5"}, 0, false},
		{"Fraction", []string{"1.5"}, 0, false},
		{"Space", []string{" 30"}, 0, false},
		{"Parameter", []string{"30;x=1"}, 0, false},
		{"List", []string{"30, 40"}, 0, false},
		{"TwoLines", []string{"30", "40"}, 0, false},
		{"Letters", []string{"abc"}, 0, false},
		{"CappedAt2To31", []string{"9999999999"}, (1 << 31) * time.Second, true},
		{"OverflowIs2To31", []string{"99999999999999999999999"}, (1 << 31) * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.lines != nil {
				h["Age"] = tc.lines
			}
			got, ok := initialAge(h)
			if got != tc.want || ok != tc.ok {
				t.Errorf("initialAge(Age: %q) = %v, %v; want %v, %v", tc.lines, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestNotModified(t *testing.T) {
	const lastModified = "Tue, 03 Nov 2026 10:00:00 GMT"
	stored := func(status int, kv ...string) entry.Response {
		return entry.Response{Status: status, Header: headerOf(kv...)}
	}
	both := stored(200, "ETag", `"abc"`, "Last-Modified", lastModified)
	for _, tc := range []struct {
		name    string
		request []string // request header name, value pairs
		resp    entry.Response
		want    bool
	}{
		{"Unconditional", nil, both, false},

		// If-None-Match.
		{"StrongMatch", []string{"If-None-Match", `"abc"`}, both, true},
		{"WeakRequestTag", []string{"If-None-Match", `W/"abc"`}, both, true},
		{"WeakStoredTag", []string{"If-None-Match", `"abc"`}, stored(200, "ETag", `W/"abc"`), true},
		{"BothWeak", []string{"If-None-Match", `W/"abc"`}, stored(200, "ETag", `W/"abc"`), true},
		{"NoMatch", []string{"If-None-Match", `"xyz"`}, both, false},
		{"Star", []string{"If-None-Match", "*"}, both, true},
		{"StarWithoutETag", []string{"If-None-Match", "*"}, stored(200, "Last-Modified", lastModified), true},
		{"ListMatches", []string{"If-None-Match", `"x", W/"y",  "abc"`}, both, true},
		{"ListWithoutMatch", []string{"If-None-Match", `"x", "y"`}, both, false},
		{"SeveralLines", []string{"If-None-Match", `"x"`, "If-None-Match", `"abc"`}, both, true},
		{"UnquotedIsNotTheTag", []string{"If-None-Match", "abc"}, both, false},
		{"StoredWithoutETag", []string{"If-None-Match", `"abc"`}, stored(200, "Last-Modified", lastModified), false},
		{"Not200", []string{"If-None-Match", `"abc"`}, stored(404, "ETag", `"abc"`), false},
		{"StarNot200", []string{"If-None-Match", "*"}, stored(203, "ETag", `"abc"`), false},
		{"IfNoneMatchOverridesIfModifiedSince", []string{"If-None-Match", `"xyz"`, "If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, both, false},

		// If-Modified-Since.
		{"ModifiedBefore", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, both, true},
		{"ModifiedAtTheSameTime", []string{"If-Modified-Since", lastModified}, both, true},
		{"ModifiedAfter", []string{"If-Modified-Since", "Mon, 02 Nov 2026 10:00:00 GMT"}, both, false},
		{"InvalidDate", []string{"If-Modified-Since", "yesterday"}, both, false},
		{"StoredWithoutLastModified", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, stored(200, "ETag", `"abc"`), false},
		{"StoredInvalidLastModified", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, stored(200, "Last-Modified", "soon"), false},
		{"IfModifiedSinceNot200", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, stored(404, "Last-Modified", lastModified), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/r", nil)
			for i := 0; i+1 < len(tc.request); i += 2 {
				r.Header.Add(tc.request[i], tc.request[i+1])
			}
			if got := notModified(r, tc.resp); got != tc.want {
				t.Errorf("notModified(%v, stored %d %v) = %v, want %v", tc.request, tc.resp.Status, tc.resp.Header, got, tc.want)
			}
		})
	}
}
