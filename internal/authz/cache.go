package authz

import (
	"sync"
	"time"
)

// filterCache keeps Filters for a short time, bounded in size. When full it
// first drops expired entries, then an arbitrary quarter of the rest: a
// cache miss only costs one evaluation.
type filterCache struct {
	mu   sync.RWMutex
	m    map[cacheKey]cached
	size int
	ttl  time.Duration
}

type cached struct {
	f   Filter
	exp time.Time
}

func newFilterCache(size int, ttl time.Duration) *filterCache {
	return &filterCache{m: make(map[cacheKey]cached, size), size: size, ttl: ttl}
}

func (c *filterCache) get(k cacheKey, now time.Time) (Filter, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.exp) {
		return Filter{}, false
	}
	return e.f, true
}

func (c *filterCache) put(k cacheKey, f Filter, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.size {
		for k, e := range c.m {
			if !now.Before(e.exp) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) <= c.size*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = cached{f: f, exp: now.Add(c.ttl)}
}

func (c *filterCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
