module github.com/smqgw/smqgw

go 1.26.8

require (
	github.com/gorilla/websocket v1.5.3
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
)

require github.com/BurntSushi/toml v1.6.0
