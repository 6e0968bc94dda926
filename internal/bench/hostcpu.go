package bench

import (
	"context"
	"time"
)

// hostSample is the host's busy CPU time and the workload's share of it,
// in clock ticks, at one moment.
type hostSample struct {
	at         time.Time
	busy, ours int64
}

// foreign returns the CPU, in cores, that processes outside the workload
// used between s and a later sample t (processes that started and ended in
// between included: their time is in the host's busy time only).
func (s hostSample) foreign(t hostSample) float64 {
	el := t.at.Sub(s.at).Seconds()
	if el <= 0 {
		return 0
	}
	return float64((t.busy-s.busy)-(t.ours-s.ours)) / clockTicks / el
}

// hostMeter measures the CPU other processes use while phases run; a nil
// *hostMeter (not Linux, or /proc unreadable) measures nothing.
type hostMeter struct {
	dbs  []string
	read func(dbs []string) (hostSample, error)
}

// newHostMeter returns a meter reading the host with read (sampleHost when
// nil), or nil when it cannot.
func newHostMeter(dbs []string, read func([]string) (hostSample, error)) *hostMeter {
	if read == nil {
		read = sampleHost
	}
	if _, err := read(dbs); err != nil {
		return nil
	}
	return &hostMeter{dbs: dbs, read: read}
}

func (m *hostMeter) sample() (hostSample, bool) {
	if m == nil {
		return hostSample{}, false
	}
	s, err := m.read(m.dbs)
	return s, err == nil
}

// waitQuiet waits until other processes use less than limit cores over a
// one-second window, for at most max. It returns the last window's
// foreign load and whether the host was quiet. A limit or max of 0 turns
// the wait off.
func (m *hostMeter) waitQuiet(ctx context.Context, limit float64, max time.Duration) (float64, bool) {
	if m == nil || max <= 0 || limit <= 0 {
		return 0, true
	}
	deadline := time.Now().Add(max)
	last := 0.0
	for {
		a, ok := m.sample()
		if !ok {
			return 0, true
		}
		select {
		case <-ctx.Done():
			return last, false
		case <-time.After(time.Second):
		}
		b, ok := m.sample()
		if !ok {
			return 0, true
		}
		if last = a.foreign(b); last < limit {
			return last, true
		}
		if time.Now().After(deadline) {
			return last, false
		}
	}
}
