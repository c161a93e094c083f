// Package web holds the browser side of smqgw: smq.js, a small SMQ client
// for browsers (an ES module with no dependencies), and the console page
// the gateway serves on routes that enable it.
package web

import "embed"

// Files are the console page and the client, served by the gateway.
//
//go:embed smq.js console.html console.js
var Files embed.FS
