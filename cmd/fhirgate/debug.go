package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// startDebug serves the Go profiler on a loopback address for operators
// chasing a performance problem. Profiles hold no request content.
//
// /debug/fhirgate serves counters as JSON: policy decision latency, the
// audit log's records, commits and commit latency, and HL7 v2 intake's
// messages, batches and resources mapped, written, unchanged and named.
func startDebug(addr string, logger *slog.Logger) { startDebugStats(addr, nil, logger) }

// startDebugStats is startDebug with /debug/fhirgate serving stats().
func startDebugStats(addr string, stats func() any, logger *slog.Logger) {
	mux := http.NewServeMux()
	if stats != nil {
		mux.HandleFunc("/debug/fhirgate", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(stats())
		})
	}
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
