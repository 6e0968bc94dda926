package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// startDebug serves the Go profiler on a loopback address for operators
// chasing a performance problem. Profiles hold no request content.
func startDebug(addr string, logger *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		logger.Info("profiling listener", "addr", addr)
		if err := srv.ListenAndServe(); err != nil {
			logger.Warn("profiling listener stopped", "error", err.Error())
		}
	}()
}
