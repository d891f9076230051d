package entry

import (
	"encoding/binary"
	"errors"
)

// Variants is what the cache stores under a URL's key when the responses
// for that URL vary on request headers the route does not key on (Vary):
// the names of those headers, and a generation that is part of every
// variant's key. Deleting the index (an unsafe request to the URL) thus
// orphans every variant at once, in every process, without listing them.
type Variants struct {
	Names      []string // canonical header names, sorted, without duplicates
	Generation string   // random, set when the index is first stored
}

// variantsTag opens an encoded [Variants]. A stored response opens with
// its status as a uvarint, never 0, so the two cannot be confused.
const variantsTag = 0

// ErrVariants is returned by [DecodeVariants] for bytes that are not a
// well-formed variant index.
var ErrVariants = errors.New("malformed variant index")

// EncodeVariants encodes v as: a 0 byte, the name count, each name, then
// the generation; integers are uvarints and strings length-prefixed.
func EncodeVariants(v Variants) []byte {
	n := 16 + len(v.Generation)
	for _, name := range v.Names {
		n += len(name) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, variantsTag)
	b = binary.AppendUvarint(b, uint64(len(v.Names)))
	for _, name := range v.Names {
		b = appendString(b, name)
	}
	return appendString(b, v.Generation)
}

// IsVariants reports whether b, a stored value, is a variant index rather
// than a response.
func IsVariants(b []byte) bool { return len(b) > 0 && b[0] == variantsTag }

// DecodeVariants decodes a variant index.
func DecodeVariants(b []byte) (Variants, error) {
	if !IsVariants(b) {
		return Variants{}, ErrVariants
	}
	d := decoder{b: b[1:]}
	n := d.uvarint()
	if d.err != nil || n == 0 || n > uint64(len(d.b)) {
		return Variants{}, ErrVariants
	}
	v := Variants{Names: make([]string, 0, n)}
	for range n {
		v.Names = append(v.Names, d.string())
	}
	v.Generation = d.string()
	if d.err != nil || len(d.b) != 0 {
		return Variants{}, ErrVariants
	}
	return v, nil
}
