// An HTTP server on a UNIX socket counting its hits (stdlib only), for
// tests/programs_test.ts: the count must carry on after a restore.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	var hits, ticks int64
	l, err := net.Listen("unix", os.Args[1])
	if err != nil {
		panic(err)
	}
	go func() {
		for range time.Tick(20 * time.Millisecond) {
			atomic.AddInt64(&ticks, 1)
		}
	}()
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hits=%d ticks=%d\n", atomic.AddInt64(&hits, 1), atomic.LoadInt64(&ticks))
	}))
}
