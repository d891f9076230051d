package core

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	const limit = 10
	for _, tc := range []struct {
		name  string
		write func(w http.ResponseWriter)
		// What the recorder keeps when it buffered the whole response.
		streamed   bool
		status     int
		header     http.Header
		body       string
		sentStatus int    // what reached the real writer; 0: nothing
		sent       string // the real writer's body
	}{
		{
			name:   "NothingWritten",
			write:  func(w http.ResponseWriter) {},
			status: 200, header: http.Header{},
		},
		{
			name:   "HeaderOnly",
			write:  func(w http.ResponseWriter) { w.Header().Set("X-A", "1") },
			status: 200, header: http.Header{"X-A": {"1"}},
		},
		{
			name:   "WriteImpliesOK",
			write:  func(w http.ResponseWriter) { fmt.Fprint(w, "hello") },
			status: 200, header: http.Header{}, body: "hello",
		},
		{
			name: "StatusAndBody",
			write: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusNonAuthoritativeInfo)
				fmt.Fprint(w, "one")
				fmt.Fprint(w, "two")
			},
			status: 203, header: http.Header{"Content-Type": {"text/plain"}}, body: "onetwo",
		},
		{
			name: "SecondWriteHeaderIgnored",
			write: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusNotFound)
				w.WriteHeader(http.StatusOK)
			},
			status: 404, header: http.Header{},
		},
		{
			name: "InformationalIgnored",
			write: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusAccepted)
			},
			status: 202, header: http.Header{},
		},
		{
			name: "HeaderChangedAfterWriteHeaderNotKept",
			write: func(w http.ResponseWriter) {
				w.Header().Set("X-A", "before")
				w.WriteHeader(http.StatusOK)
				w.Header().Set("X-A", "after")
				w.Header().Set("X-B", "after")
			},
			status: 200, header: http.Header{"X-A": {"before"}},
		},
		{
			name: "UnstoredHeadersDropped",
			write: func(w http.ResponseWriter) {
				w.Header().Set("Connection", "close")
				w.Header().Set("Transfer-Encoding", "chunked")
				w.Header().Set("Cache-Status", "upstream; hit")
				w.Header().Set("X-Cache", "HIT")
				w.Header().Set("Age", "5")
			},
			status: 200, header: http.Header{"Age": {"5"}},
		},
		{
			name: "LowerCaseNamesCanonicalised",
			write: func(w http.ResponseWriter) {
				// net/http sends names set this way as written; every
				// rule reads them canonically.
				w.Header()["set-cookie"] = []string{"a=1"}
				w.Header()["cache-control"] = []string{"private"}
				w.Header()["connection"] = []string{"close"}
				w.Header()["x-cache"] = []string{"HIT"}
			},
			status: 200, header: http.Header{"Set-Cookie": {"a=1"}, "Cache-Control": {"private"}},
		},
		{
			name: "NamesDifferingInCaseMerged",
			write: func(w http.ResponseWriter) {
				w.Header()["vary"] = []string{"Origin"}
				w.Header()["VARY"] = []string{"Accept"}
				w.Header()["Vary"] = []string{"Accept-Language"}
				w.WriteHeader(http.StatusOK)
			},
			status: 200, header: http.Header{"Vary": {"Accept-Language", "Accept", "Origin"}},
		},
		{
			name: "EncodedVariesOnAcceptEncoding",
			write: func(w http.ResponseWriter) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Header().Set("Vary", "Origin")
			},
			status: 200, header: http.Header{"Content-Encoding": {"gzip"}, "Vary": {"Origin", "Accept-Encoding"}},
		},
		{
			name: "EncodedAlreadyVarying",
			write: func(w http.ResponseWriter) {
				w.Header()["content-encoding"] = []string{"br"}
				w.Header()["vary"] = []string{"accept-encoding"}
			},
			status: 200, header: http.Header{"Content-Encoding": {"br"}, "Vary": {"accept-encoding"}},
		},
		{
			name:   "IdentityNotVaried",
			write:  func(w http.ResponseWriter) { w.Header().Set("Content-Encoding", "identity") },
			status: 200, header: http.Header{"Content-Encoding": {"identity"}},
		},
		{
			name:   "BodyAtTheLimitBuffered",
			write:  func(w http.ResponseWriter) { fmt.Fprint(w, strings.Repeat("x", limit)) },
			status: 200, header: http.Header{}, body: strings.Repeat("x", limit),
		},
		{
			name: "BodyOverTheLimitStreams",
			write: func(w http.ResponseWriter) {
				w.Header().Set("X-A", "1")
				fmt.Fprint(w, "0123456")
				fmt.Fprint(w, "789ab")
				fmt.Fprint(w, "cd")
			},
			streamed: true, sentStatus: 200, sent: "0123456789abcd",
		},
		{
			name: "Flush",
			write: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusAccepted)
				fmt.Fprint(w, "event 1;")
				w.(http.Flusher).Flush()
				fmt.Fprint(w, "event 2;")
			},
			streamed: true, sentStatus: 202, sent: "event 1;event 2;",
		},
		{
			name: "FlushThroughResponseController",
			write: func(w http.ResponseWriter) {
				fmt.Fprint(w, "a")
				if err := http.NewResponseController(w).Flush(); err != nil {
					panic(err)
				}
				fmt.Fprint(w, "b")
			},
			streamed: true, sentStatus: 200, sent: "ab",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			rec := newRecorder(w, "X-Cache", limit)
			streams := 0
			rec.onStream = func() { streams++ }
			tc.write(rec)
			if rec.streamed != tc.streamed {
				t.Fatalf("streamed = %v, want %v", rec.streamed, tc.streamed)
			}
			if wantStreams := map[bool]int{false: 0, true: 1}[tc.streamed]; streams != wantStreams {
				t.Errorf("onStream called %d times, want %d", streams, wantStreams)
			}
			if tc.streamed {
				if w.Code != tc.sentStatus || w.Body.String() != tc.sent {
					t.Errorf("real writer got %d %q, want %d %q", w.Code, w.Body.String(), tc.sentStatus, tc.sent)
				}
				if got := w.Header().Get("X-Cache"); got != "BYPASS" {
					t.Errorf("streamed response X-Cache = %q, want BYPASS", got)
				}
				if got, want := w.Header().Get(CacheStatusHeader), fmt.Sprintf("flightcache; fwd=uri-miss; fwd-status=%d", tc.sentStatus); got != want {
					t.Errorf("streamed response Cache-Status = %q, want %q", got, want)
				}
				return
			}
			if w.Body.Len() != 0 || len(w.Header()) != 0 || w.Flushed {
				t.Errorf("a buffered response reached the real writer: %q, header %v", w.Body.String(), w.Header())
			}
			resp := rec.response()
			if resp.Status != tc.status || string(resp.Body) != tc.body || !reflect.DeepEqual(resp.Header, tc.header) {
				t.Errorf("response() = %d %v %q, want %d %v %q", resp.Status, resp.Header, resp.Body, tc.status, tc.header, tc.body)
			}
		})
	}
}

func TestRecorderHeaderIsolation(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("X-Real", "yes")
	rec := newRecorder(w, "X-Cache", 1<<10)
	if got := rec.Header().Get("X-Real"); got != "" {
		t.Errorf("the handler sees the real writer's header X-Real = %q, want its own empty header", got)
	}
	rec.Header().Set("X-Handler", "1")
	if got := w.Header().Get("X-Handler"); got != "" {
		t.Errorf("a buffered handler's header reached the real writer: X-Handler = %q", got)
	}
	rec.WriteHeader(http.StatusOK)
	resp := rec.response()
	resp.Header.Set("X-Handler", "changed")
	if got := rec.Header().Get("X-Handler"); got != "1" {
		t.Errorf("changing the recorded response's header changed the handler's: X-Handler = %q, want 1", got)
	}

	// Once streaming, the handler writes the real header.
	rec.Flush()
	rec.Header().Set("X-Late", "1")
	if got := w.Header().Get("X-Late"); got != "1" {
		t.Errorf("after Flush, Header() is not the real writer's: X-Late = %q", got)
	}
}

// hijackable is a ResponseWriter whose connection can be taken over.
type hijackable struct {
	*httptest.ResponseRecorder
	conn net.Conn
}

func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

func TestRecorderHijack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		writer   func(t *testing.T) http.ResponseWriter
		wantErr  bool
		streamed bool
	}{
		{"Hijackable", func(t *testing.T) http.ResponseWriter {
			server, client := net.Pipe()
			t.Cleanup(func() { server.Close(); client.Close() })
			return &hijackable{ResponseRecorder: httptest.NewRecorder(), conn: server}
		}, false, true},
		{"NotHijackable", func(t *testing.T) http.ResponseWriter { return httptest.NewRecorder() }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.writer(t)
			rec := newRecorder(w, "X-Cache", 1<<10)
			conn, _, err := rec.Hijack()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Hijack() error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, http.ErrNotSupported) {
				t.Errorf("Hijack() error = %v, want http.ErrNotSupported", err)
			}
			if !tc.wantErr && conn != w.(*hijackable).conn {
				t.Errorf("Hijack() returned another connection than the real writer's")
			}
			if rec.streamed != tc.streamed {
				t.Errorf("after Hijack, streamed = %v, want %v (a hijacked response is not stored)", rec.streamed, tc.streamed)
			}
		})
	}
}

// deadlineWriter is a ResponseWriter that records write deadlines.
type deadlineWriter struct {
	*httptest.ResponseRecorder
	deadline time.Time
}

func (d *deadlineWriter) SetWriteDeadline(t time.Time) error {
	d.deadline = t
	return nil
}

func TestRecorderUnwrap(t *testing.T) {
	w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
	rec := newRecorder(w, "X-Cache", 1<<10)
	if got := rec.Unwrap(); got != w {
		t.Errorf("Unwrap() = %T %p, want the real writer %p", got, got, w)
	}
	// http.ResponseController reaches the real writer's methods, which
	// the recorder does not have, through Unwrap.
	deadline := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	if err := http.NewResponseController(rec).SetWriteDeadline(deadline); err != nil || !w.deadline.Equal(deadline) {
		t.Errorf("SetWriteDeadline through the recorder = %v, real writer's deadline %v; want nil, %v", err, w.deadline, deadline)
	}
	if rec.streamed {
		t.Error("reaching the real writer through Unwrap marked the response streamed")
	}
}
