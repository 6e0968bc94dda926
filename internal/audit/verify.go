package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Report is the result of Verify.
type Report struct {
	OK      bool
	Records int64 // records whose hash and link were checked
	Head    Head  // the last record checked
	// Checkpoints is how many external checkpoints were read (their
	// signatures all checked); Latest is the newest of them.
	Checkpoints int
	Latest      *Checkpoint
	Broken      *Break // the first problem found; nil when OK
	Warnings    []string
}

// Break is what Verify found wrong, at the first broken seq.
type Break struct {
	Seq    int64
	Kind   string // a Broken* constant
	Detail string
}

func (b *Break) String() string { return fmt.Sprintf("seq %d: %s: %s", b.Seq, b.Kind, b.Detail) }

// Kinds of Break.
const (
	// BrokenEdited: the record's content does not match its stored hash.
	BrokenEdited = "edited"
	// BrokenDeleted: records are missing before Seq (a gap); Seq is the
	// first missing one.
	BrokenDeleted = "deleted"
	// BrokenReordered: the record at Seq is intact but was written under
	// another seq (records were swapped or moved).
	BrokenReordered = "reordered"
	// BrokenRelinked: record Seq+1 does not link to record Seq's hash
	// although each matches its own hash: Seq (or records before it, up to
	// the previous checkpoint) was rewritten and rehashed.
	BrokenRelinked = "relinked"
	// BrokenRewritten: the chain is consistent but its hash at a
	// checkpointed Seq differs from the signed checkpoint: records up to
	// Seq were rewritten and the chain rehashed.
	BrokenRewritten = "rewritten"
	// BrokenTruncated: the log ends before the newest checkpoint's seq:
	// the records from Seq to the checkpoint's were deleted.
	BrokenTruncated = "truncated"
	// BrokenCheckpoint: an external checkpoint is malformed, or its
	// signature does not verify.
	BrokenCheckpoint = "checkpoint"
	// BrokenFormat: a record has an unknown format or malformed hashes.
	BrokenFormat = "format"
)

// reorderWindow is how far from its place Verify looks for the seq a
// record was written under, when its hash does not match.
const reorderWindow = 1024

// Verify recomputes the chain from seq 1 and checks it against every
// external checkpoint in sink (whose signatures signer verifies). It
// returns an error only when it cannot check (database or sink
// unreachable); tampering is reported in the Report, at the first broken
// seq.
//
// What it detects: an edited record (its hash no longer matches), a
// deleted record (a gap in seq), reordered records (a record's hash
// matches another seq), a record rewritten with its hash recomputed (the
// next record's prev_hash no longer matches), a rewrite with the whole rest
// of the chain rehashed (the hash at a checkpointed seq differs from the
// signed checkpoint), and a deleted tail up to the newest checkpoint (the
// log ends before the checkpoint's seq). What it cannot: records after the
// newest checkpoint deleted or rewritten-and-rehashed (reported as a
// warning: how many records only the chain protects).
func Verify(ctx context.Context, pool *pgxpool.Pool, sink CheckpointSink, signer Signer) (Report, error) {
	var rep Report
	fail := func(b Break) (Report, error) {
		rep.OK = false
		rep.Broken = &b
		return rep, nil
	}

	// The checkpoints first, the database snapshot after: every checkpoint
	// read then refers to records committed before the snapshot.
	var cps []Checkpoint
	if sink != nil {
		var err error
		cps, err = sink.Checkpoints(ctx)
		if errors.Is(err, ErrBadCheckpoint) {
			return fail(Break{Kind: BrokenCheckpoint, Detail: err.Error()})
		}
		if err != nil {
			return rep, err
		}
	}
	if len(cps) > 0 && signer == nil {
		return rep, errors.New("audit: verify: the sink holds checkpoints but no signer was given to check them")
	}
	for _, cp := range cps {
		if cp.KeyID != signer.KeyID() {
			return fail(Break{Seq: cp.Seq, Kind: BrokenCheckpoint,
				Detail: fmt.Sprintf("the checkpoint of %s is signed by key %q, not by %q", cp.Time.Format(time.RFC3339), cp.KeyID, signer.KeyID())})
		}
		if err := signer.Verify(ctx, cp.Message(), cp.Signature); err != nil {
			if errors.Is(err, ErrBadSignature) {
				return fail(Break{Seq: cp.Seq, Kind: BrokenCheckpoint,
					Detail: fmt.Sprintf("the signature of the checkpoint of %s does not verify: the checkpoint is forged or altered", cp.Time.Format(time.RFC3339))})
			}
			return rep, fmt.Errorf("audit: verify checkpoint signature: %w", err)
		}
	}
	rep.Checkpoints = len(cps)
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].Seq < cps[j].Seq })
	if len(cps) > 0 {
		latest := cps[len(cps)-1]
		rep.Latest = &latest
	}

	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	rows, err := tx.Query(ctx, `SELECT `+selectColumns+` FROM audit_log ORDER BY seq`)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	defer rows.Close()

	prev := Head{Hash: genesis}
	next := 0         // the next checkpoint to meet, in cps
	var vouched int64 // the highest seq a checkpoint has confirmed
	var broken *Break // set to stop the walk
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
		if b := checkRecord(&e, prev); b != nil {
			broken = b
			break
		}
		for next < len(cps) && cps[next].Seq == e.Seq {
			cp := cps[next]
			if !bytes.Equal(cp.Hash, e.Hash) {
				broken = &Break{Seq: e.Seq, Kind: BrokenRewritten, Detail: fmt.Sprintf(
					"record %d's hash differs from the checkpoint signed at %s although the chain up to it is consistent: "+
						"records between seq %d and %d were rewritten and the chain rehashed",
					e.Seq, cp.Time.Format(time.RFC3339), vouched+1, e.Seq)}
				break
			}
			vouched = e.Seq
			next++
		}
		if broken != nil {
			break
		}
		prev = Head{Seq: e.Seq, Hash: e.Hash}
		rep.Records++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	rep.Head = prev
	if broken != nil {
		return fail(*broken)
	}
	if rep.Latest != nil && rep.Latest.Seq > prev.Seq {
		return fail(Break{Seq: prev.Seq + 1, Kind: BrokenTruncated, Detail: fmt.Sprintf(
			"the log ends at seq %d but the checkpoint signed at %s vouches for seq %d: records %d to %d were deleted",
			prev.Seq, rep.Latest.Time.Format(time.RFC3339), rep.Latest.Seq, prev.Seq+1, rep.Latest.Seq)})
	}
	switch {
	case rep.Latest == nil && prev.Seq > 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"no external checkpoint: the %d records are protected by the hash chain only (a rewrite with the chain rehashed, or a deleted tail, would go unnoticed)", prev.Seq))
	case rep.Latest != nil && prev.Seq > rep.Latest.Seq:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d records after the newest checkpoint (seq %d) are protected by the hash chain only until the next checkpoint",
			prev.Seq-rep.Latest.Seq, rep.Latest.Seq))
	}
	rep.OK = true
	return rep, nil
}

// checkRecord checks one record against the previous one.
func checkRecord(e *Entry, prev Head) *Break {
	want := prev.Seq + 1
	if e.Seq != want {
		if e.Seq-1 == want {
			return &Break{Seq: want, Kind: BrokenDeleted, Detail: fmt.Sprintf("record %d is missing (deleted)", want)}
		}
		return &Break{Seq: want, Kind: BrokenDeleted, Detail: fmt.Sprintf("records %d to %d are missing (deleted)", want, e.Seq-1)}
	}
	h, err := e.ComputeHash()
	if err != nil {
		return &Break{Seq: e.Seq, Kind: BrokenFormat, Detail: err.Error()}
	}
	if !bytes.Equal(h, e.Hash) {
		s := e.stored()
		for d := int64(1); d <= reorderWindow; d++ {
			for _, k := range []int64{e.Seq - d, e.Seq + d} {
				if k < 1 {
					continue
				}
				if hk, _ := s.computeHash(k, e.PrevHash); bytes.Equal(hk, e.Hash) {
					return &Break{Seq: e.Seq, Kind: BrokenReordered, Detail: fmt.Sprintf(
						"seq %d holds the record written as seq %d: records were reordered", e.Seq, k)}
				}
			}
		}
		return &Break{Seq: e.Seq, Kind: BrokenEdited, Detail: fmt.Sprintf(
			"record %d's content does not match its hash: it was edited", e.Seq)}
	}
	if !bytes.Equal(e.PrevHash, prev.Hash) {
		if prev.Seq == 0 {
			return &Break{Seq: e.Seq, Kind: BrokenRelinked, Detail: "record 1 does not start from the genesis hash: the chain was rewritten"}
		}
		return &Break{Seq: prev.Seq, Kind: BrokenRelinked, Detail: fmt.Sprintf(
			"record %d does not link to record %d's hash although each matches its own: record %d was rewritten and rehashed",
			e.Seq, prev.Seq, prev.Seq)}
	}
	return nil
}
