package core

import (
	"crypto/sha256"
	"encoding/base64"
)

// storeKey maps a caller's key to the key the store sees:
// "<namespace>:{<hash>}", where hash is the first 128 bits of the key's
// SHA-256 in unpadded base64url (22 characters). The store derives the
// key's lock and channel names from it by adding suffixes, and the braces
// make all of them one Redis Cluster hash tag, hence one slot. Hashing
// bounds the length and keeps raw user bytes out of Redis key names.
func storeKey(namespace, key string) string {
	sum := sha256.Sum256([]byte(key))
	b := make([]byte, 0, len(namespace)+26)
	b = append(b, namespace...)
	b = append(b, ':', '{')
	b = base64.RawURLEncoding.AppendEncode(b, sum[:16])
	b = append(b, '}')
	return string(b)
}
