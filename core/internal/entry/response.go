package entry

import (
	"encoding/binary"
	"errors"
	"net/http"
)

// ErrResponse is returned by DecodeResponse for a value that is not a
// well-formed encoded response.
var ErrResponse = errors.New("malformed stored response")

// Response is an HTTP response as the cache stores it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// EncodeResponse encodes r as: status, header field count, then per field
// its name and values, then the body; every integer a uvarint and every
// string length-prefixed.
func EncodeResponse(r Response) []byte {
	n := 16 + len(r.Body)
	for k, vs := range r.Header {
		n += len(k) + 8
		for _, v := range vs {
			n += len(v) + 4
		}
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(r.Status))
	b = binary.AppendUvarint(b, uint64(len(r.Header)))
	for k, vs := range r.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return append(b, r.Body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeResponse decodes an encoded response into a new Header map; the
// Body aliases b. It makes a fixed number of allocations whatever the
// number of fields: one string holds every name and value, one slice
// every value, and the map.
func DecodeResponse(b []byte) (Response, error) {
	// First pass: validate, and measure the header block and its values.
	d := decoder{b: b}
	status := d.uvarint()
	fields := d.uvarint()
	if d.err != nil || status < 100 || status > 999 || fields > uint64(len(b)) {
		return Response{}, ErrResponse
	}
	values := uint64(0)
	for range fields {
		d.skip()
		nv := d.uvarint()
		if d.err != nil || nv > uint64(len(d.b)) {
			return Response{}, ErrResponse
		}
		for range nv {
			d.skip()
		}
		values += nv
	}
	if d.err != nil {
		return Response{}, ErrResponse
	}
	body := d.b

	// Second pass over the validated block, slicing one string.
	block := string(b[:len(b)-len(body)])
	s := stringDecoder{s: block}
	s.uvarint() // status
	s.uvarint() // field count
	h := make(http.Header, fields)
	all := make([]string, values)
	for range fields {
		k := s.string()
		nv := int(s.uvarint())
		vs := all[:nv:nv] // full slice: an append to one field cannot reach the next
		all = all[nv:]
		for i := range vs {
			vs[i] = s.string()
		}
		h[k] = vs
	}
	return Response{Status: int(status), Header: h, Body: body}, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = ErrResponse
		return 0
	}
	d.b = d.b[n:]
	return v
}

// skip moves past one length-prefixed string.
func (d *decoder) skip() {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = ErrResponse
		return
	}
	d.b = d.b[n:]
}

// stringDecoder reads a header block that decoder has validated.
type stringDecoder struct{ s string }

func (d *stringDecoder) uvarint() uint64 {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		c := d.s[0]
		d.s = d.s[1:]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

func (d *stringDecoder) string() string {
	n := d.uvarint()
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = ErrResponse
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
