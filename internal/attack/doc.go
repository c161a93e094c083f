// Package attack is smqgw's attack suite: each TestAttack test runs the
// smqgw binary as its own process with its default limits, attacks it over
// loopback from addresses of 127.0.0.0/8, and meanwhile measures what a
// well-behaved client on another address sees (the time to Connack of new
// sessions, and a subscriber and a publisher that must lose nothing), and
// the gateway's memory, descriptors and goroutines before and after.
//
// The package holds only tests. `go test ./internal/attack` runs the short
// version (2.5 s an attack, as CI does); SMQGW_ATTACK_LONG=1 runs each
// attack for 20 s, SMQGW_ATTACK_REPORT=FILE appends one JSON line per
// attack to FILE, SMQGW_ATTACK_HEAP_DIR=DIR keeps the gateway's heap
// profile after each attack. The README's "Reliability" section is a run
// of the long version.
package attack
