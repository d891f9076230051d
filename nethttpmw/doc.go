// Package nethttpmw adds flightcache response caching to net/http handlers.
//
// The adapter arrives with the HTTP layer (issue 3); until then it holds
// no code.
package nethttpmw
