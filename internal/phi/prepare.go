package phi

import (
	"context"
	"time"
)

// prepareGrace is how long before its TTL a key is refreshed by Prepare,
// so that a transaction started after Prepare does not find it expired.
const prepareGrace = time.Minute

// Prepare makes sure the tenant's current data key and its index key are
// in the cache (creating them on the tenant's first write) and stay there
// for at least a minute. The store calls it before it opens a database
// transaction: loading a key takes a connection of its own, and a
// transaction that waited for one while holding another could starve the
// pool when many such transactions start at once.
func (k *Keys) Prepare(ctx context.Context, tenant string) error {
	grace := min(prepareGrace, k.opt.TTL/2)
	k.mu.Lock()
	st, known := k.tenants[tenant]
	reload := !known || k.now().Sub(st.checked) > k.opt.Refresh
	for _, ck := range []cacheKey{{tenant, PurposeData, st.current}, {tenant, PurposeIndex, 1}} {
		if el, ok := k.cache[ck]; ok && k.now().Add(grace).After(el.Value.(*cached).expires) {
			k.evict(el) // reloaded below, so it lasts through the transaction
			reload = true
		}
	}
	k.mu.Unlock()
	if reload {
		// Re-reads the tenant's keys and epoch in place: the tenant's state
		// is never absent meanwhile, so concurrent writers never see "no
		// key yet" and make one.
		if err := k.loadTenant(ctx, tenant); err != nil {
			return err
		}
	}
	if _, _, err := k.Current(ctx, tenant); err != nil {
		return err
	}
	d, err := k.indexKey(ctx, tenant, "", "")
	if err != nil {
		return err
	}
	clear(d)
	return nil
}

// Prepare readies the tenant's keys before a write transaction (see
// Keys.Prepare).
func (s *Service) Prepare(ctx context.Context, tenant string) error {
	return s.keys.Prepare(ctx, tenant)
}
