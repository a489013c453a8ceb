module github.com/mochi-mqtt/server/v2

go 1.24

require (
	github.com/gorilla/websocket v1.5.3
	github.com/rs/xid v1.6.0
)
