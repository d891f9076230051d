package core

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// wrapper is a middleware's writer around the recorder, as gin's and
// echo's are.
type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestDoNotStoreFindsTheRecorder(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(http.ResponseWriter) http.ResponseWriter
	}{
		{"recorder", func(w http.ResponseWriter) http.ResponseWriter { return w }},
		{"wrapped once", func(w http.ResponseWriter) http.ResponseWriter { return wrapper{w} }},
		{"wrapped twice", func(w http.ResponseWriter) http.ResponseWriter { return wrapper{wrapper{w}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(httptest.NewRecorder(), "X-Cache", DefaultMaxBodySize)
			DoNotStore(tc.wrap(rec))
			if !rec.doNotStore {
				t.Error("DoNotStore did not mark the recorder")
			}
		})
	}
}

func TestDoNotStoreElsewhereIsANoOp(t *testing.T) {
	w := httptest.NewRecorder()
	DoNotStore(w)
	DoNotStore(wrapper{w})
	DoNotStore(wrapper{}) // Unwrap returns nil
	DoNotStore(nil)
	if len(w.Header()) != 0 || w.Body.Len() != 0 || w.Code != http.StatusOK {
		t.Errorf("DoNotStore on a plain writer changed it: header %v, body %q, status %d", w.Header(), w.Body.String(), w.Code)
	}
}

// TestDoNotStoreKeepsTheResponseOut runs a handler that calls DoNotStore
// through the middleware: its client gets the response unchanged, and the
// next request runs the handler again.
func TestDoNotStoreKeepsTheResponseOut(t *testing.T) {
	s := NewMemoryStore(0)
	defer s.Close()
	mw := New(s).Middleware()
	calls := 0
	next := func(w http.ResponseWriter, r *http.Request) error {
		calls++
		DoNotStore(wrapper{w})
		w.Write([]byte("partial"))
		return nil
	}
	for i := range 2 {
		w := httptest.NewRecorder()
		if err := mw.Serve(w, httptest.NewRequest("GET", "/p", nil), "", next); err != nil {
			t.Fatal(err)
		}
		if w.Body.String() != "partial" || w.Header().Get("Cache-Control") != "" {
			t.Errorf("request %d: body %q, Cache-Control %q, want partial and none", i, w.Body.String(), w.Header().Get("Cache-Control"))
		}
		if got := w.Header().Get("X-Cache"); got == "HIT" || got == "MISS" {
			t.Errorf("request %d: X-Cache %q, want neither HIT nor MISS (not stored)", i, got)
		}
	}
	if calls != 2 {
		t.Errorf("handler ran %d times for two requests, want 2: the response was stored", calls)
	}
}
