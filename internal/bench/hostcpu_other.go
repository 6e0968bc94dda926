//go:build !linux

package bench

import "errors"

// sampleHost needs Linux's /proc; elsewhere foreign load is not measured.
func sampleHost(dbs []string) (hostSample, error) {
	return hostSample{}, errors.New("bench: measuring other processes' CPU needs Linux /proc")
}
