// Package echomw adds flightcache response caching to echo v4 handlers.
//
// The adapter arrives with the HTTP layer (issue 3); until then it holds
// no code.
package echomw
