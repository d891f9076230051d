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
// Body aliases b.
func DecodeResponse(b []byte) (Response, error) {
	d := decoder{b: b}
	status := d.uvarint()
	fields := d.uvarint()
	if d.err != nil || status < 100 || status > 999 || fields > uint64(len(b)) {
		return Response{}, ErrResponse
	}
	h := make(http.Header, fields)
	for range fields {
		k := d.string()
		nv := d.uvarint()
		if d.err != nil || nv > uint64(len(d.b)) {
			return Response{}, ErrResponse
		}
		vs := make([]string, 0, nv)
		for range nv {
			vs = append(vs, d.string())
		}
		h[k] = vs
	}
	if d.err != nil {
		return Response{}, ErrResponse
	}
	return Response{Status: int(status), Header: h, Body: d.b}, nil
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
