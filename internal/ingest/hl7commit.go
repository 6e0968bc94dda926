package ingest

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Group commit. Messages are parsed, mapped and validated on their
// connections' goroutines, in parallel; what they produce is then stored by
// a few committers, each taking every message waiting at that moment (up
// to maxBatch) into one transaction: one archive lookup, one prefetch, one
// round trip of writes and one commit (one WAL flush) for the batch instead
// of for every message. Nothing waits for a batch to fill: a committer
// takes what is queued, and messages arriving meanwhile form the next
// batch. Every message of a batch is acknowledged only after the batch
// commits, so AA still means durably stored.
//
// The committers of a tenant are shards: a message goes to the shard of
// its patient (else of its first resource), and a shard stores one batch
// at a time. Messages about one patient are therefore stored in the order
// they reach their shard (one connection's messages in the order sent),
// and two batches in flight do not write the same patient's resources
// (unless a message names two patients, as a merge does) — a hot patient
// serializes in its shard instead of making concurrent batches fail and
// retry.
//
// A batch never lets one message fail another. A message that writes a
// resource an earlier message of the batch wrote (the same patient in two
// messages sent at once) waits for the next batch; a message whose new
// master data is invalid is answered AE without writing anything; and when
// the batch's transaction fails as a whole, each of its messages is retried
// in a transaction of its own.

const (
	// maxBatch bounds the messages stored in one transaction.
	maxBatch = 64
	// shards is how many batches of one tenant are in flight at once (one
	// per shard): two keep the database busy while a batch commits.
	shards = 2
	// batchTimeout bounds one batch's transaction. The batch does not run
	// under any one connection's context: a sender that hangs up does not
	// cancel the other messages of its batch.
	batchTimeout = 60 * time.Second
)

// hl7Job is one mapped, validated message waiting to be stored.
type hl7Job struct {
	msg                *hl7v2.Message
	raw                []byte
	now                time.Time
	mode               ackMode
	ackID              string
	sender, cid, mtype string
	out                *mapping.Output
	entries            []search.Entries // of the non-master resources (master data: when new)
	ack, stored        []byte           // the ACK to send (nil: none asked) and the one archived
	provID             string
	done               chan result
	answered           bool // by the committer that holds the job
}

// answer delivers the job's outcome to the connection waiting for it.
func (j *hl7Job) answer(r result) {
	j.answered = true
	j.done <- r
}

// HL7Stats counts what intake stored since it started, for the debug
// listener and the bench tool's check that every resource a message mapped
// is accounted for: Mapped = Written + Unchanged + Named.
type HL7Stats struct {
	Messages  int64 // accepted and stored (not re-sends answered from the archive)
	Batches   int64 // transactions that stored them
	Mapped    int64 // resources the accepted messages mapped to
	Written   int64 // of those: new versions written
	Unchanged int64 // of those: identical to the stored version (re-sent content), not rewritten
	Named     int64 // of those: master data stored already (or by an earlier message of the batch), only named
}

type hl7Counters struct {
	messages, batches, mapped, written, unchanged, named atomic.Int64
}

// Stats returns the counters.
func (h *HL7) Stats() HL7Stats {
	c := &h.counters
	return HL7Stats{Messages: c.messages.Load(), Batches: c.batches.Load(), Mapped: c.mapped.Load(),
		Written: c.written.Load(), Unchanged: c.unchanged.Load(), Named: c.named.Load()}
}

// committer is the queue of one shard of a tenant's messages waiting for
// a batch, and whether a goroutine is storing them.
type committer struct {
	mu      sync.Mutex
	queue   []*hl7Job
	leading bool
}

// shardKey names a tenant's shard.
type shardKey struct {
	tenant string
	shard  uint32
}

// shardOf is the job's shard: by its patient, else its first resource.
func shardOf(j *hl7Job) uint32 {
	key := j.provID
	for _, r := range j.out.Resources {
		if r.Type == "Patient" {
			key = r.ID
			break
		}
		if key == j.provID && !masterData[r.Type] {
			key = r.Type + "/" + r.ID
		}
	}
	f := fnv.New32a()
	f.Write([]byte(key))
	return f.Sum32() % shards
}

// commit queues the job in its shard and waits for its outcome.
func (h *HL7) commit(tenant string, j *hl7Job) result {
	k := shardKey{tenant, shardOf(j)}
	h.commitMu.Lock()
	c := h.committers[k]
	if c == nil {
		c = &committer{}
		h.committers[k] = c
	}
	h.commitMu.Unlock()

	c.mu.Lock()
	c.queue = append(c.queue, j)
	if !c.leading {
		c.leading = true
		go h.lead(tenant, c)
	}
	c.mu.Unlock()
	return <-j.done
}

// lead stores batches from c's queue until it is empty.
func (h *HL7) lead(tenant string, c *committer) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leading = false
			c.mu.Unlock()
			return
		}
		n := min(len(c.queue), maxBatch)
		batch := make([]*hl7Job, n)
		copy(batch, c.queue)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()

		deferred := h.storeBatchSafely(tenant, batch)
		if len(deferred) > 0 {
			c.mu.Lock()
			c.queue = append(deferred, c.queue...)
			c.mu.Unlock()
		}
	}
}

// storeBatchSafely is storeBatch for a committer goroutine: a panic (a
// defect, never input: messages are parsed and mapped before they get
// here) must not take the gateway down with every connection's messages.
// The jobs not yet answered get a transient error, so their senders send
// them again, and the panic is logged without any message content.
func (h *HL7) storeBatchSafely(tenant string, jobs []*hl7Job) (deferred []*hl7Job) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("hl7v2 batch failed with a panic; its messages are answered AE for a retry",
				"tenant", tenant, "messages", len(jobs), "panic_type", fmt.Sprintf("%T", p))
			for _, j := range jobs {
				if !j.answered {
					j.answer(h.transient(j.msg, j.mode, j.ackID, j.now, fmt.Errorf("ingest: batch panicked")))
				}
			}
			deferred = nil
		}
	}()
	return h.storeBatch(tenant, jobs)
}

// storeBatch stores the jobs in one transaction and answers each of them,
// except those it returns: they conflict with an earlier job of the batch
// and go into the next one.
func (h *HL7) storeBatch(tenant string, jobs []*hl7Job) (deferred []*hl7Job) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	results := make([]result, len(jobs))
	answered := make([]bool, len(jobs))
	var tally batchTally
	err := h.svc.inTx(ctx, tenant, func(tx *store.Tx) error {
		clear(answered)
		deferred = deferred[:0]
		tally = batchTally{}
		return h.writeBatch(ctx, tx, jobs, results, answered, &deferred, &tally)
	})
	if err != nil {
		if len(jobs) > 1 {
			// Something in the batch failed the transaction: find out
			// which message, by storing each on its own.
			deferred = nil
			for _, j := range jobs {
				deferred = append(deferred, h.storeBatch(tenant, []*hl7Job{j})...)
			}
			return deferred
		}
		j := jobs[0]
		// A concurrent copy of the same message may have won the race.
		if prev, ok, lookupErr := h.store.HL7Ack(ctx, tenant, j.sender, j.cid); lookupErr == nil && ok {
			j.answer(result{ack: prev, code: "AA", sender: j.sender, controlID: j.cid})
		} else {
			j.answer(h.transient(j.msg, j.mode, j.ackID, j.now, err))
		}
		return nil
	}
	if tally.messages > 0 {
		c := &h.counters
		c.batches.Add(1)
		c.messages.Add(tally.messages)
		c.mapped.Add(tally.mapped)
		c.written.Add(tally.written)
		c.unchanged.Add(tally.unchanged)
		c.named.Add(tally.named)
	}
	for i, j := range jobs {
		if answered[i] {
			j.answer(results[i])
			if results[i].code == "AA" {
				h.log.Debug("hl7v2 accepted", "tenant", tenant, "type", j.mtype, "resources", len(j.out.Resources))
			}
		}
	}
	return deferred
}

// writeBatch is the body of a batch's transaction. It may run more than
// once (a lost race with a concurrent writer); it starts over each time.
func (h *HL7) writeBatch(ctx context.Context, tx *store.Tx, jobs []*hl7Job, results []result, answered []bool, deferred *[]*hl7Job, tally *batchTally) error {
	answer := func(i int, r result) { results[i], answered[i] = r, true }

	// Re-sends of accepted messages (a retry after a lost ACK) get the
	// original ACK and write nothing.
	msgKeys := make([]store.HL7Key, len(jobs))
	for i, j := range jobs {
		msgKeys[i] = store.HL7Key{Sender: j.sender, ControlID: j.cid}
	}
	acks, err := tx.HL7Acks(ctx, msgKeys)
	if err != nil {
		return err
	}
	var live []int
	inBatch := make(map[store.HL7Key]bool, len(jobs))
	var keys []store.Key
	for i, j := range jobs {
		k := msgKeys[i]
		if ack, ok := acks[k]; ok {
			answer(i, result{ack: ack, code: "AA", sender: j.sender, controlID: j.cid})
			continue
		}
		if inBatch[k] { // the same message twice at once: the copy is answered from the archive next batch
			*deferred = append(*deferred, j)
			continue
		}
		inBatch[k] = true
		live = append(live, i)
		for _, r := range j.out.Resources {
			keys = append(keys, store.Key{Type: r.Type, ID: r.ID})
		}
		keys = append(keys, store.Key{Type: "Provenance", ID: j.provID})
	}
	if len(live) == 0 {
		return nil
	}
	if err := tx.Prefetch(ctx, dedupeKeys(keys), false); err != nil {
		return err
	}

	// written holds what this batch has written or found so far: master
	// data a later message names again is not looked up twice.
	written := make(map[store.Key]store.Version, len(keys))
	for _, i := range live {
		j := jobs[i]
		if h.conflicts(j, written) {
			*deferred = append(*deferred, j)
			continue
		}
		// Every check before the job's first write: a job answered AE
		// leaves nothing behind in the batch.
		var invalid []hl7v2.AckError
		for ri, r := range j.out.Resources {
			if !masterData[r.Type] {
				continue
			}
			k := store.Key{Type: r.Type, ID: r.ID}
			if _, ok := written[k]; ok {
				continue
			}
			if cur, ok := tx.Peek(r.Type, r.ID); ok && !cur.Deleted {
				written[k] = cur
				continue
			}
			if invalid = h.prepare(j, ri); invalid != nil {
				break
			}
		}
		if invalid != nil {
			answer(i, result{ack: j.reply("AE", invalid), code: "AE", sender: j.sender, controlID: j.cid, reason: describe(invalid)})
			continue
		}
		if err := h.writeJob(ctx, tx, j, written, tally); err != nil {
			return err
		}
		answer(i, result{ack: j.ack, code: "AA", sender: j.sender, controlID: j.cid})
	}
	return nil
}

// writeJob writes one message's resources, its Provenance and its archive
// record. The Provenance's targets are what the message produced: its
// resources (written, or unchanged by a re-send), and master data it
// created — not the doctors and wards it merely names that exist already,
// which it neither generated nor updated (and which would make every
// Provenance list dozens of them).
func (h *HL7) writeJob(ctx context.Context, tx *store.Tx, j *hl7Job, written map[store.Key]store.Version, tally *batchTally) error {
	tally.messages++
	tally.mapped += int64(len(j.out.Resources))
	targets := make([]string, 0, len(j.out.Resources))
	var named []string // existing master data the message names
	for i, r := range j.out.Resources {
		k := store.Key{Type: r.Type, ID: r.ID}
		if masterData[r.Type] {
			if v, ok := written[k]; ok {
				named = append(named, fmt.Sprintf("%s/%s/_history/%d", v.Type, v.ID, v.Version))
				tally.named++
				continue
			}
		}
		v, err := tx.Put(ctx, store.Write{Resource: r, Entries: j.entries[i], Method: "PUT", SkipUnchanged: true,
			IfAbsent: masterData[r.Type]})
		if err != nil {
			return err
		}
		if v.LastUpdated.Equal(tx.Now()) {
			tally.written++
		} else {
			tally.unchanged++
		}
		written[k] = v
		targets = append(targets, fmt.Sprintf("%s/%s/_history/%d", v.Type, v.ID, v.Version))
	}
	if len(targets) == 0 { // a message of master data only: Provenance.target is 1..*
		targets = named
	}
	prov, err := buildProvenance(provenanceSpec{ID: j.provID, Targets: targets, AgentSystem: "urn:fhirgate:hl7v2:sender", Agent: j.sender,
		EntitySystem: "urn:fhirgate:hl7v2:control-id", Entity: j.sender + "|" + j.cid, EntityDisplay: "HL7 v2 " + j.mtype,
		Assembler: "fhirgate HL7 v2 mapping " + j.out.Version, At: tx.Now()})
	if err != nil {
		return err
	}
	if _, err := tx.Put(ctx, store.Write{Resource: prov, Entries: search.Extract(prov.Type, prov.Content), Method: "PUT"}); err != nil {
		return err
	}
	written[store.Key{Type: "Provenance", ID: j.provID}] = store.Version{}
	return tx.RecordHL7(ctx, store.HL7Record{Sender: j.sender, ControlID: j.cid, ReceivedAt: j.now, MessageType: j.mtype,
		MappingVersion: j.out.Version, Resources: len(j.out.Resources), ProvenanceID: j.provID, ACK: j.stored, Raw: j.raw})
}

// batchTally counts one batch attempt's work; it is added to the
// counters when the batch commits.
type batchTally struct{ messages, mapped, written, unchanged, named int64 }

// conflicts reports whether the job writes a resource (other than master
// data, which is only created, never rewritten) that an earlier job of the
// batch wrote: one transaction writes a resource once.
func (h *HL7) conflicts(j *hl7Job, written map[store.Key]store.Version) bool {
	if _, ok := written[store.Key{Type: "Provenance", ID: j.provID}]; ok {
		return true
	}
	for _, r := range j.out.Resources {
		if masterData[r.Type] {
			continue
		}
		if _, ok := written[store.Key{Type: r.Type, ID: r.ID}]; ok {
			return true
		}
	}
	return false
}

// reply is the job's ACK with the given original-mode code, nil when the
// sender's mode asks for none.
func (j *hl7Job) reply(original string, errs []hl7v2.AckError) []byte {
	code := j.mode.replyCode(original)
	if code == "" {
		return nil
	}
	return hl7v2.BuildACK(j.msg, code, errs, j.ackID, j.now)
}

func dedupeKeys(keys []store.Key) []store.Key {
	seen := make(map[store.Key]bool, len(keys))
	out := keys[:0]
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}
