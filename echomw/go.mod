module github.com/flightcache/flightcache/echomw

go 1.26.0

replace github.com/flightcache/flightcache/core => ../core
