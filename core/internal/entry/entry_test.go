package entry

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	for _, v := range [][]byte{nil, {}, []byte("hello"), bytes.Repeat([]byte{0xff}, 70000)} {
		e, err := Decode(Encode(at, 90*time.Second, v))
		if err != nil {
			t.Fatalf("Decode(Encode(%d bytes)) error: %v", len(v), err)
		}
		if !e.StoredAt.Equal(at) || e.TTL != 90*time.Second || !bytes.Equal(e.Value, v) {
			t.Errorf("round trip = (%v, %v, %d bytes), want (%v, 90s, %d bytes)", e.StoredAt, e.TTL, len(e.Value), at, len(v))
		}
		if want := at.Add(90 * time.Second); !e.Expires().Equal(want) {
			t.Errorf("Expires() = %v, want %v", e.Expires(), want)
		}
	}
}

func TestTaggedRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	for _, n := range []int{1, 3, MaxTags} {
		tags := make([]Tag, n)
		for i := range tags {
			tags[i] = Tag{ID: [TagIDSize]byte{byte(i), 0xee}, Version: int64(i) * 1_000_000_007}
		}
		for _, v := range [][]byte{nil, []byte("hello")} {
			e, err := Decode(EncodeTagged(at, time.Minute, tags, v))
			if err != nil {
				t.Fatalf("Decode(EncodeTagged(%d tags, %d bytes)) error: %v", n, len(v), err)
			}
			if e.Kind != KindTagged || !e.StoredAt.Equal(at) || e.TTL != time.Minute || !bytes.Equal(e.Value, v) || !slices.Equal(e.Tags, tags) {
				t.Errorf("round trip of %d tags = %+v, want kind %d, %d bytes, tags %v", n, e, KindTagged, len(v), tags)
			}
		}
	}
}

func TestDecodeRejectsBadTags(t *testing.T) {
	at := time.UnixMilli(1)
	tests := []struct {
		name  string
		value []byte
		want  error
	}{
		{"no count", []byte{0}, ErrTruncated},
		{"zero tags", []byte{0, 0, 'v'}, ErrForeign},
		{"too many tags", append([]byte{0, MaxTags + 1}, make([]byte, (MaxTags+1)*tagSize)...), ErrForeign},
		{"short tags", append([]byte{0, 2}, make([]byte, tagSize+3)...), ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(encode(KindTagged, at, time.Minute, tt.value)); !errors.Is(err, tt.want) {
				t.Errorf("Decode() error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Encode(time.UnixMilli(1), time.Minute, []byte("payload"))
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	future := bytes.Clone(good)
	future[2] = 9
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrForeign},
		{"foreign", []byte(`{"json":true}`), ErrForeign},
		{"header only", good[:10], ErrTruncated},
		{"short value", good[:len(good)-1], ErrTruncated},
		{"long value", append(bytes.Clone(good), 'x'), ErrTruncated},
		{"bit flip", flipped, ErrChecksum},
		{"newer version", future, ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.in); !errors.Is(err, tt.want) {
				t.Errorf("Decode() error = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestInvalidationsWriteNewBytes checks what fencing rests on: every
// tombstone and every soft purge of the same entry is a different byte
// string, and each decodes to its kind with the value kept.
func TestInvalidationsWriteNewBytes(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	value := Entry{Kind: KindValue, StoredAt: at, TTL: time.Minute, Value: []byte("v1")}
	seen := map[string]bool{}
	for range 100 {
		for _, b := range [][]byte{EncodeTombstone(at), Purged(value)} {
			if seen[string(b)] {
				t.Fatalf("invalidation wrote %x twice", b)
			}
			seen[string(b)] = true
		}
	}
	e, err := Decode(Purged(value))
	if err != nil || e.Kind != KindPurged || string(e.Value) != "v1" || !e.StoredAt.Equal(at) || e.TTL != time.Minute {
		t.Errorf("Decode(Purged(v1)) = %+v, %v; want a purged entry holding v1, stored at %v for 1m", e, err, at)
	}
	again, err := Decode(Purged(e))
	if err != nil || again.Kind != KindPurged || string(again.Value) != "v1" {
		t.Errorf("Decode(Purged(Purged(v1))) = %+v, %v; want a purged entry holding v1", again, err)
	}
	if e, err := Decode(EncodeTombstone(at)); err != nil || e.Kind != KindTombstone || len(e.Value) != 0 {
		t.Errorf("Decode(EncodeTombstone()) = %+v, %v; want an empty tombstone", e, err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(Encode(time.UnixMilli(42), time.Second, []byte("value")))
	f.Add(Encode(time.Now(), time.Hour, nil))
	f.Add(EncodePass(time.Now(), time.Second))
	f.Add(EncodeTombstone(time.Now()))
	f.Add(Purged(Entry{StoredAt: time.UnixMilli(42), TTL: time.Second, Value: []byte("value")}))
	f.Add(EncodeTagged(time.UnixMilli(42), time.Second, []Tag{{ID: [TagIDSize]byte{1}, Version: 7}}, []byte("value")))
	f.Add(EncodeFetched(time.UnixMilli(42), time.Second, 200*time.Millisecond, []byte("value")))
	f.Add(EncodeTagged(time.UnixMilli(42), time.Second, make([]Tag, MaxTags), nil))
	f.Add(encode(KindTagged, time.UnixMilli(42), time.Second, []byte{0, 1, 2}))
	f.Add(encode(KindTagged, time.UnixMilli(42), time.Second, []byte{0xff, 0xff}))
	f.Add([]byte("FC"))
	f.Add([]byte("FC\x01\x00truncated"))
	f.Add([]byte("not ours at all"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		// Anything that decodes must re-encode to the same bytes.
		if e.Kind == KindTagged {
			if again := EncodeTaggedFetched(e.StoredAt, e.TTL, e.Fetch, e.Tags, e.Value); !bytes.Equal(again, b) {
				t.Fatalf("EncodeTagged(Decode(%x)) = %x", b, again)
			}
			return
		}
		if again := encodeFetched(e.Kind, e.StoredAt, e.TTL, e.Fetch, append(bytes.Clone(e.Nonce), e.Value...)); !bytes.Equal(again, b) {
			t.Fatalf("Encode(Decode(%x)) = %x", b, again)
		}
	})
}

func TestResponseRoundTrip(t *testing.T) {
	in := Response{
		Status: 201,
		Header: map[string][]string{"Content-Type": {"text/plain"}, "X-Multi": {"a", "b"}, "X-Empty": {}},
		Body:   []byte("hello"),
	}
	out, err := DecodeResponse(EncodeResponse(in))
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != 201 || string(out.Body) != "hello" || len(out.Header) != 3 ||
		out.Header.Get("Content-Type") != "text/plain" || len(out.Header["X-Multi"]) != 2 {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(EncodeResponse(Response{Status: 200, Header: map[string][]string{"A": {"b"}}, Body: []byte("x")}))
	f.Add([]byte{0xc8, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b)
		if err != nil {
			return
		}
		again, err := DecodeResponse(EncodeResponse(r))
		if err != nil || again.Status != r.Status || !bytes.Equal(again.Body, r.Body) || len(again.Header) != len(r.Header) {
			t.Fatalf("re-encoding %x changed it: %+v vs %+v (%v)", b, again, r, err)
		}
	})
}

func TestVariantsRoundTrip(t *testing.T) {
	in := Variants{Names: []string{"Accept-Encoding", "Accept-Language"}, Generation: "g1"}
	b := EncodeVariants(in)
	if !IsVariants(b) {
		t.Fatal("IsVariants(EncodeVariants(...)) = false")
	}
	out, err := DecodeVariants(b)
	if err != nil || !slices.Equal(out.Names, in.Names) || out.Generation != in.Generation {
		t.Fatalf("DecodeVariants = %+v, %v; want %+v", out, err, in)
	}
	// A stored response is never taken for an index, nor decoded as one.
	resp := EncodeResponse(Response{Status: 200, Header: map[string][]string{}, Body: []byte("x")})
	if IsVariants(resp) {
		t.Error("IsVariants(a response) = true")
	}
	if _, err := DecodeResponse(b); err == nil {
		t.Error("DecodeResponse(an index) succeeded")
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0}, {0, 5, 1, 'A'}, append(b[:len(b):len(b)], 'x')} {
		if _, err := DecodeVariants(bad); err == nil {
			t.Errorf("DecodeVariants(%x) succeeded", bad)
		}
	}
}

func FuzzDecodeVariants(f *testing.F) {
	f.Add(EncodeVariants(Variants{Names: []string{"Accept"}, Generation: "g"}))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVariants(b)
		if err != nil {
			return
		}
		// Uvarints have more than one encoding, so compare meanings.
		again, err := DecodeVariants(EncodeVariants(v))
		if err != nil || !slices.Equal(again.Names, v.Names) || again.Generation != v.Generation {
			t.Fatalf("re-encoding %x changed it: %+v vs %+v (%v)", b, again, v, err)
		}
	})
}

func TestFetchedRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	tags := []Tag{{ID: [TagIDSize]byte{1}, Version: 7}}
	for _, fetch := range []time.Duration{0, time.Microsecond, 200 * time.Millisecond, 100 * 24 * time.Hour} {
		for _, enc := range [][]byte{
			EncodeFetched(at, time.Minute, fetch, []byte("hello")),
			EncodeTaggedFetched(at, time.Minute, fetch, tags, []byte("hello")),
		} {
			e, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode(fetch %v) error: %v", fetch, err)
			}
			want := fetch.Truncate(time.Millisecond)
			switch {
			case fetch > 0 && fetch < time.Millisecond:
				want = time.Millisecond
			case fetch > time.Duration(1<<32-1)*time.Millisecond:
				want = time.Duration(1<<32-1) * time.Millisecond
			}
			if e.Fetch != want || string(e.Value) != "hello" || !e.StoredAt.Equal(at) || e.TTL != time.Minute {
				t.Errorf("round trip of fetch %v = %+v, want fetch %v and the value", fetch, e, want)
			}
		}
	}
	// Without a fetch time the bytes are those of Encode: entries written
	// by a cache without early refresh do not change.
	if !bytes.Equal(EncodeFetched(at, time.Minute, 0, []byte("v")), Encode(at, time.Minute, []byte("v"))) {
		t.Error("EncodeFetched with no fetch time differs from Encode")
	}
}

func TestFetchedFlagOnlyOnValues(t *testing.T) {
	b := EncodeTombstone(time.UnixMilli(1))
	b[3] |= kindFetched
	if _, err := Decode(b); !errors.Is(err, ErrVersion) {
		t.Errorf("Decode(tombstone flagged with a fetch time) error = %v, want ErrVersion", err)
	}
	short := EncodeFetched(time.UnixMilli(1), time.Minute, time.Second, nil)
	if _, err := Decode(short[:headerSize+2]); !errors.Is(err, ErrTruncated) {
		t.Errorf("Decode(truncated fetch time) error = %v, want ErrTruncated", err)
	}
}
