package main

import (
	"net/http"
	"testing"
)

// The API server must bound every phase of a connection, not only the header read: without
// read, write and idle timeouts a client trickling a body or idling on keep-alive holds a
// goroutine and a descriptor forever. The write timeout must outlast the slowest route.
func TestAPIServerTimeouts(t *testing.T) {
	srv := newAPIServer("127.0.0.1:0", http.NotFoundHandler())
	for name, d := range map[string]int64{
		"ReadHeaderTimeout": int64(srv.ReadHeaderTimeout),
		"ReadTimeout":       int64(srv.ReadTimeout),
		"WriteTimeout":      int64(srv.WriteTimeout),
		"IdleTimeout":       int64(srv.IdleTimeout),
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	if srv.ReadTimeout < srv.ReadHeaderTimeout {
		t.Errorf("ReadTimeout %v is shorter than ReadHeaderTimeout %v", srv.ReadTimeout, srv.ReadHeaderTimeout)
	}
	if srv.WriteTimeout <= oauthExchangeTimeout {
		t.Errorf("WriteTimeout %v does not outlast the OAuth code exchange (%v): the callback's answer would be cut off", srv.WriteTimeout, oauthExchangeTimeout)
	}
}
