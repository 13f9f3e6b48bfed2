// Package ops serves the operations endpoint of a sluice process: /livez
// (the process is alive), /readyz (it is consuming: false while starting,
// paused or draining) and /metrics (Prometheus).
//
//	srv := ops.New(":8080", reg, consumer.Ready)
//	go srv.ListenAndServe()
//	defer srv.Shutdown(ctx)
package ops

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// New returns an HTTP server on addr; ready is consulted on every /readyz.
func New(addr string, reg *prometheus.Registry, ready func() bool) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
