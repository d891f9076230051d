// Package entry is the versioned binary encoding of a stored cache entry.
//
// Layout of version 1 (all integers big-endian):
//
//	offset size  field
//	0      2     magic "FC"
//	2      1     version (1)
//	3      1     kind (0 = value, 1 = pass: not cacheable for now,
//	             2 = tombstone, 3 = purged value, 4 = tagged value)
//	4      8     stored at, Unix milliseconds
//	12     8     freshness lifetime, milliseconds
//	20     4     value length n
//	24     4     CRC-32C of the value
//	28     n     value
//
// A tombstone's value is a random nonce; a purged value's is a random
// nonce followed by the value it was before the purge. The nonce makes
// every invalidation write bytes no earlier read can have seen, so that a
// fill's commit, conditional on the key holding what its lookup read, is
// refused after any invalidation in between (see core's fencing).
//
// A tagged value's value starts with its tags and the purge version each
// had when the value was stored, then holds the value itself:
//
//	offset size  field
//	0      2     tag count k (1 to MaxTags)
//	2      24k   per tag: its 16-byte ID (a hash of the tag), then the
//	             tag's purge version, an 8-byte signed integer
//	2+24k  ...   the value
//
// A reader compares the recorded versions with the tags' current ones: a
// tag purged since makes the entry count as invalidated.
//
// A value or tagged value may carry the time its fetch took (the origin's
// latency, which early refresh sizes its window by). Its kind byte then
// has the high bit (kindFetched) set, and 4 more header bytes follow the
// checksum, before the value:
//
//	28     4     fetch time, milliseconds
//	32     n     value
//
// Entries without it are laid out as above, byte for byte; a decoder that
// predates the bit reads the flagged kind as unknown, a miss.
//
// The stored time and lifetime let a reader compute Age and, later, serve
// stale entries without a format break. Anything else at a key — another
// program's value, a truncated write, a flipped bit, a newer version this
// code does not know — decodes to an error, which the cache treats as a miss.
package entry

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Version is the encoding version this package writes.
const Version = 1

// Entry kinds.
const (
	KindValue = 0 // the entry holds a cached value
	KindPass  = 1 // the key's value is not cacheable: fetch it uncached, without waiting
	// KindTombstone marks a key invalidated: a miss, whose bytes fence
	// off commits of fills that began before the invalidation.
	KindTombstone = 2
	// KindPurged is a value marked stale by a soft purge: served only as
	// stale, and fenced like a tombstone.
	KindPurged = 3
	// KindTagged is a value carrying surrogate keys (tags) and the purge
	// version each tag had when it was stored.
	KindTagged = 4
)

// MaxTags is the most tags a tagged value may carry.
const MaxTags = 32

// TagIDSize is the length of a tag's ID.
const TagIDSize = 16

// Tag is one tag of a tagged value: its ID, a hash of the tag that the
// cache derives the tag's store key from, and the tag's purge version
// when the value was stored.
type Tag struct {
	ID      [TagIDSize]byte
	Version int64
}

const tagSize = TagIDSize + 8

// nonceSize is the length of the random nonce of tombstones and purged values.
const nonceSize = 16

const headerSize = 28

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Decode. Callers treat all of them as a miss.
var (
	ErrForeign   = errors.New("not a flightcache entry")
	ErrVersion   = errors.New("unknown entry version")
	ErrTruncated = errors.New("truncated entry")
	ErrChecksum  = errors.New("entry checksum mismatch")
)

// Entry is one decoded cache entry.
type Entry struct {
	Kind     byte
	StoredAt time.Time     // millisecond precision
	TTL      time.Duration // freshness lifetime, millisecond precision
	Value    []byte        // aliases the encoded bytes
	Nonce    []byte        // tombstones and purged values only; aliases the encoded bytes
	Tags     []Tag         // tagged values only
	// Fetch is how long the fill that stored the value took to fetch it;
	// 0 when it was not recorded.
	Fetch time.Duration
}

// Expires reports when the entry stops being fresh.
func (e Entry) Expires() time.Time { return e.StoredAt.Add(e.TTL) }

// Encode returns the version-1 encoding of a value stored at storedAt and
// fresh for ttl.
func Encode(storedAt time.Time, ttl time.Duration, value []byte) []byte {
	return encode(KindValue, storedAt, ttl, value)
}

// EncodeFetched is [Encode] for a value whose fetch took fetch, which the
// entry records (to the millisecond, at least 1 ms, at most about 49
// days); fetch 0 records nothing, as Encode.
func EncodeFetched(storedAt time.Time, ttl, fetch time.Duration, value []byte) []byte {
	return encodeFetched(KindValue, storedAt, ttl, fetch, value)
}

// EncodeTagged returns the encoding of a value stored at storedAt, fresh
// for ttl, that carries tags (1 to [MaxTags] of them) with their purge
// versions.
func EncodeTagged(storedAt time.Time, ttl time.Duration, tags []Tag, value []byte) []byte {
	return EncodeTaggedFetched(storedAt, ttl, 0, tags, value)
}

// EncodeTaggedFetched is [EncodeTagged] recording fetch, as [EncodeFetched].
func EncodeTaggedFetched(storedAt time.Time, ttl, fetch time.Duration, tags []Tag, value []byte) []byte {
	if len(tags) == 0 || len(tags) > MaxTags {
		panic("entry: EncodeTagged: tag count out of range")
	}
	b := make([]byte, 2+tagSize*len(tags)+len(value))
	binary.BigEndian.PutUint16(b, uint16(len(tags)))
	off := 2
	for _, t := range tags {
		copy(b[off:], t.ID[:])
		binary.BigEndian.PutUint64(b[off+TagIDSize:], uint64(t.Version))
		off += tagSize
	}
	copy(b[off:], value)
	return encodeFetched(KindTagged, storedAt, ttl, fetch, b)
}

// EncodePass returns a pass marker: the key's value is not cacheable, for ttl.
func EncodePass(storedAt time.Time, ttl time.Duration) []byte {
	return encode(KindPass, storedAt, ttl, nil)
}

// EncodeTombstone returns a tombstone written at, with a fresh nonce.
func EncodeTombstone(at time.Time) []byte {
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	return encode(KindTombstone, at, 0, nonce[:])
}

// Purged returns e marked stale by a soft purge, with a fresh nonce. e
// must be a value or an already purged value.
func Purged(e Entry) []byte {
	b := make([]byte, nonceSize+len(e.Value))
	rand.Read(b[:nonceSize])
	copy(b[nonceSize:], e.Value)
	return encode(KindPurged, e.StoredAt, e.TTL, b)
}

// kindFetched, set in the kind byte, says the header holds a fetch time.
const kindFetched = 0x80

const fetchSize = 4

func encodeFetched(kind byte, storedAt time.Time, ttl, fetch time.Duration, value []byte) []byte {
	if fetch <= 0 {
		return encode(kind, storedAt, ttl, value)
	}
	b := make([]byte, headerSize+fetchSize+len(value))
	putHeader(b, kind|kindFetched, storedAt, ttl, value)
	binary.BigEndian.PutUint32(b[headerSize:], fetchMillis(fetch))
	copy(b[headerSize+fetchSize:], value)
	return b
}

func fetchMillis(d time.Duration) uint32 {
	return uint32(min(max(d.Milliseconds(), 1), 1<<32-1))
}

func encode(kind byte, storedAt time.Time, ttl time.Duration, value []byte) []byte {
	b := make([]byte, headerSize+len(value))
	putHeader(b, kind, storedAt, ttl, value)
	copy(b[headerSize:], value)
	return b
}

func putHeader(b []byte, kind byte, storedAt time.Time, ttl time.Duration, value []byte) {
	b[0], b[1], b[2], b[3] = 'F', 'C', Version, kind
	binary.BigEndian.PutUint64(b[4:], uint64(storedAt.UnixMilli()))
	binary.BigEndian.PutUint64(b[12:], uint64(ttl.Milliseconds()))
	binary.BigEndian.PutUint32(b[20:], uint32(len(value)))
	binary.BigEndian.PutUint32(b[24:], crc32.Checksum(value, castagnoli))
}

// Decode parses an encoded entry. The returned Value aliases b.
func Decode(b []byte) (Entry, error) {
	if len(b) < 3 || b[0] != 'F' || b[1] != 'C' {
		return Entry{}, ErrForeign
	}
	if b[2] != Version {
		return Entry{}, fmt.Errorf("%w %d", ErrVersion, b[2])
	}
	if len(b) < headerSize {
		return Entry{}, ErrTruncated
	}
	kind, size := b[3], headerSize
	var fetch time.Duration
	if kind&kindFetched != 0 {
		kind &^= kindFetched
		if kind != KindValue && kind != KindTagged {
			return Entry{}, fmt.Errorf("%w: kind %d with a fetch time", ErrVersion, kind)
		}
		if len(b) < headerSize+fetchSize {
			return Entry{}, ErrTruncated
		}
		fetch = time.Duration(binary.BigEndian.Uint32(b[headerSize:])) * time.Millisecond
		if fetch == 0 {
			return Entry{}, fmt.Errorf("%w: zero fetch time", ErrForeign)
		}
		size += fetchSize
	}
	if kind > KindTagged {
		return Entry{}, fmt.Errorf("%w: kind %d", ErrVersion, kind)
	}
	stored := int64(binary.BigEndian.Uint64(b[4:]))
	ttl := int64(binary.BigEndian.Uint64(b[12:]))
	n := binary.BigEndian.Uint32(b[20:])
	if uint64(len(b)-size) != uint64(n) {
		return Entry{}, ErrTruncated
	}
	if ttl < 0 || ttl > int64(time.Duration(1<<62)/time.Millisecond) {
		return Entry{}, fmt.Errorf("%w: lifetime out of range", ErrForeign)
	}
	value := b[size:]
	if crc32.Checksum(value, castagnoli) != binary.BigEndian.Uint32(b[24:]) {
		return Entry{}, ErrChecksum
	}
	var nonce []byte
	if kind == KindPurged || kind == KindTombstone {
		if len(value) < nonceSize {
			return Entry{}, ErrTruncated
		}
		nonce, value = value[:nonceSize:nonceSize], value[nonceSize:]
	}
	var tags []Tag
	if kind == KindTagged {
		if len(value) < 2 {
			return Entry{}, ErrTruncated
		}
		k := int(binary.BigEndian.Uint16(value))
		if k == 0 || k > MaxTags {
			return Entry{}, fmt.Errorf("%w: %d tags", ErrForeign, k)
		}
		if len(value) < 2+k*tagSize {
			return Entry{}, ErrTruncated
		}
		tags = make([]Tag, k)
		for i := range tags {
			off := 2 + i*tagSize
			copy(tags[i].ID[:], value[off:])
			tags[i].Version = int64(binary.BigEndian.Uint64(value[off+TagIDSize:]))
		}
		value = value[2+k*tagSize:]
	}
	return Entry{
		Tags:     tags,
		Kind:     kind,
		StoredAt: time.UnixMilli(stored),
		TTL:      time.Duration(ttl) * time.Millisecond,
		Value:    value,
		Nonce:    nonce,
		Fetch:    fetch,
	}, nil
}
