package core

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

func TestAcceptsEncoding(t *testing.T) {
	for _, tc := range []struct {
		name     string
		encoding []string // the stored response's Content-Encoding lines
		accept   []string // the request's Accept-Encoding lines; nil: absent
		want     bool
	}{
		{"NotEncoded", nil, nil, true},
		{"Identity", []string{"identity"}, nil, true},
		{"AbsentAcceptsIdentityOnly", []string{"gzip"}, nil, false},
		{"EmptyAcceptsIdentityOnly", []string{"gzip"}, []string{""}, false},
		{"Listed", []string{"gzip"}, []string{"gzip, deflate, br"}, true},
		{"ListedOnSecondLine", []string{"br"}, []string{"gzip", "br"}, true},
		{"CaseInsensitive", []string{"GZip"}, []string{"gzip"}, true},
		{"XGzipAlias", []string{"gzip"}, []string{"x-gzip"}, true},
		{"XGzipStored", []string{"x-gzip"}, []string{"gzip"}, true},
		{"NotListed", []string{"gzip"}, []string{"br"}, false},
		{"QZero", []string{"gzip"}, []string{"gzip;q=0, br"}, false},
		{"QZeroPointZero", []string{"gzip"}, []string{"gzip; q=0.000"}, false},
		{"QPositive", []string{"gzip"}, []string{"gzip;q=0.001"}, true},
		{"QOne", []string{"gzip"}, []string{"gzip;q=1.000"}, true},
		{"QMalformed", []string{"gzip"}, []string{"gzip;q=0.5x"}, false},
		{"QTooPrecise", []string{"gzip"}, []string{"gzip;q=0.0001"}, false},
		{"QOverOne", []string{"gzip"}, []string{"gzip;q=1.5"}, false},
		{"ListedTwiceOnceRefused", []string{"gzip"}, []string{"gzip", "gzip;q=0"}, false},
		{"Star", []string{"br"}, []string{"*"}, true},
		{"StarRefused", []string{"br"}, []string{"*;q=0"}, false},
		{"ListedBeatsStar", []string{"gzip"}, []string{"gzip;q=0, *"}, false},
		{"StarDoesNotOverrideListed", []string{"gzip"}, []string{"gzip, *;q=0"}, true},
		{"EveryCodingMustBeAccepted", []string{"gzip, br"}, []string{"gzip"}, false},
		{"EveryCodingAccepted", []string{"gzip", "br"}, []string{"br, gzip"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tc.accept != nil {
				r.Header["Accept-Encoding"] = tc.accept
			}
			h := http.Header{}
			if tc.encoding != nil {
				h["Content-Encoding"] = tc.encoding
			}
			if got := acceptsEncoding(r, h); got != tc.want {
				t.Errorf("acceptsEncoding(Accept-Encoding %q, Content-Encoding %q) = %v, want %v", tc.accept, tc.encoding, got, tc.want)
			}
		})
	}
}

func TestRangesBounded(t *testing.T) {
	const size = 1 << 16
	many := func(n int, spec func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = spec(i)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	for _, tc := range []struct {
		name string
		rg   string
		size int
		want bool
	}{
		{"Single", "bytes=0-99", size, true},
		{"SingleSuffix", "bytes=-500", size, true},
		{"OtherUnitLeftToNetHTTP", "items=0-1,0-1", size, true},
		{"TwoAscending", "bytes=0-9,100-109", size, true},
		{"Adjacent", "bytes=0-9,10-19", size, true},
		{"WithSuffix", "bytes=0-9,-10", size, true},
		{"UnsatisfiableLeftOut", "bytes=0-9," + "99999999-", size, true},
		{"Overlapping", "bytes=0-9,5-14", size, false},
		{"Descending", "bytes=100-109,0-9", size, false},
		{"SuffixOverlaps", "bytes=0-,-10", size, false},
		{"Repeated", "bytes=0-0,0-0", size, false},
		{"MaxRanges", many(MaxRanges, func(i int) string { return strconv.Itoa(i*100) + "-" + strconv.Itoa(i*100) }), size, true},
		{"OverMaxRanges", many(MaxRanges+1, func(i int) string { return strconv.Itoa(i*100) + "-" + strconv.Itoa(i*100) }), size, false},
		{"PartsLargerThanTheBody", "bytes=0-0,2-2,4-4", 100, false},
		{"Malformed", "bytes=0-9,x-y", size, false},
		{"SignedStart", "bytes=0-9,+20-29", size, false},
		{"EndBeforeStart", "bytes=0-9,30-20", size, false},
		{"EmptySuffixes", "bytes=0-9,-0,-0,-0", size, false},
		{"OneByteOverlappingAttack", many(60000, func(int) string { return "0-0" }), 256 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rangesBounded(tc.rg, tc.size, "text/plain"); got != tc.want {
				rg := tc.rg
				if len(rg) > 60 {
					rg = rg[:60] + "..."
				}
				t.Errorf("rangesBounded(%q, %d) = %v, want %v", rg, tc.size, got, tc.want)
			}
		})
	}
}

// TestStoredEncodingNeedsAcceptance stores a compressed response the way
// an older version stored it, as the URL's one entry without Vary, and
// checks that a request that does not accept its coding goes to the
// handler instead, while one that does is served it.
func TestStoredEncodingNeedsAcceptance(t *testing.T) {
	s := NewMemoryStore(0)
	defer s.Close()
	c := New(s)
	mw := c.Middleware()
	r := httptest.NewRequest("GET", "/r", nil)
	ukey, ok := mw.policyFor("").requestKey(r)
	if !ok {
		t.Fatal("GET /r bypassed the cache")
	}
	gz := entry.EncodeResponse(entry.Response{Status: 200, Header: http.Header{"Content-Encoding": {"gzip"}}, Body: []byte("\x1f\x8bgzip bytes")})
	if _, _, err := s.SetNX(context.Background(), storeKey(c.cfg.namespace, ukey), entry.Encode(time.Now(), time.Hour, gz), time.Hour); err != nil {
		t.Fatal(err)
	}
	next := func(w http.ResponseWriter, r *http.Request) error {
		w.Write([]byte("plain bytes"))
		return nil
	}
	for _, tc := range []struct {
		method string
		accept []string
		cache  string
		body   string
	}{
		{"GET", nil, "BYPASS", "plain bytes"},
		{"GET", []string{"br, gzip;q=0"}, "BYPASS", "plain bytes"},
		{"HEAD", nil, "BYPASS", "plain bytes"}, // HEAD is answered from the store alone
		{"GET", []string{"gzip"}, "HIT", "\x1f\x8bgzip bytes"},
	} {
		r := httptest.NewRequest(tc.method, "/r", nil)
		if tc.accept != nil {
			r.Header["Accept-Encoding"] = tc.accept
		}
		w := httptest.NewRecorder()
		if err := mw.Serve(w, r, "", next); err != nil {
			t.Fatal(err)
		}
		if got := w.Header().Get("X-Cache"); got != tc.cache || w.Body.String() != tc.body {
			t.Errorf("%s with Accept-Encoding %q: %q (X-Cache %s), want %q (%s)", tc.method, tc.accept, w.Body.String(), got, tc.body, tc.cache)
		}
	}
}

// TestUnsafeInvalidatesLowerCaseLocation checks that an unsafe request
// whose handler names the changed resource in a Location header written
// in lower case (net/http sends it as written) invalidates that resource.
func TestUnsafeInvalidatesLowerCaseLocation(t *testing.T) {
	s := NewMemoryStore(0)
	defer s.Close()
	mw := New(s).Middleware()
	version := 0
	next := func(w http.ResponseWriter, r *http.Request) error {
		if r.Method == http.MethodPost {
			version++
			w.Header()["location"] = []string{"/items/7"}
			w.Header()["content-location"] = []string{"/items/8"}
			w.WriteHeader(http.StatusCreated)
			return nil
		}
		fmt.Fprintf(w, "version %d", version)
		return nil
	}
	serve := func(method, target string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		if err := mw.Serve(w, httptest.NewRequest(method, target, nil), "", next); err != nil {
			t.Fatal(err)
		}
		return w
	}
	serve("GET", "/items/7")
	serve("GET", "/items/8")
	serve("POST", "/items")
	for _, target := range []string{"/items/7", "/items/8"} {
		if got := serve("GET", target); got.Body.String() != "version 1" || got.Header().Get("X-Cache") != "MISS" {
			t.Errorf("GET %s after the POST: %q (X-Cache %s), want a fresh version 1", target, got.Body.String(), got.Header().Get("X-Cache"))
		}
	}
}
