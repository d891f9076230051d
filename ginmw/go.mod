module github.com/flightcache/flightcache/ginmw

go 1.26.0

replace github.com/flightcache/flightcache/core => ../core
