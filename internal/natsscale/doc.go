// Package natsscale measures what a cluster of smqgw nodes asks of NATS:
// the memory and the route traffic of a subscription on the server that
// holds it and on every other server, how fast interest spreads, and how
// many messages cross a route. The benchmarks start embedded nats-servers
// clustered over loopback routes in one process; docs/SCALING.md turns
// their figures into sizes for larger clusters.
//
// Nothing here is used by the gateway. docs/SCALING.md lists the commands
// that produced its figures; all of it, briefly:
//
//	go test -run '^$' -bench . ./internal/natsscale
package natsscale
