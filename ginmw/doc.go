// Package ginmw adds flightcache response caching to gin handlers.
//
// The adapter arrives with the HTTP layer (issue 3); until then it holds
// no code.
package ginmw
