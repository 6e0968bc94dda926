// Package audit is fhirgate's immutable access log: one Record per request
// (allowed or denied, read or write, API, ingest, admin, key operations and
// auditor queries), appended durably before the response is sent, chained
// by SHA-256 and anchored by signed checkpoints outside the database.
//
// It must never store PHI in plaintext: a Record holds ids, codes and
// reasons only; the one field that may carry PHI, the search query
// ("name=...&birthdate=..."), is sealed with the PHI key provider (Sealer)
// before it leaves the process. It must never log record contents or key
// material, and it must never let a request proceed whose record was not
// committed (Append returns an error, which the API answers with 503).
//
// # Layers of protection
//
//  1. Database privileges (migration 0007_audit.sql): the gateway runs as a
//     role that is a member of fhirgate_app, which may INSERT and SELECT the
//     audit tables only — no UPDATE, DELETE or TRUNCATE — and does not own
//     them.
//  2. Triggers refuse UPDATE, DELETE and TRUNCATE for every role, the owner
//     and superusers included.
//  3. A hash chain: record n stores prev_hash = hash of record n-1 (32 zero
//     bytes for record 1) and hash = SHA-256 of its canonical encoding
//     (below). Editing, deleting or reordering records breaks the chain.
//  4. Signed checkpoints (seq, hash, time) written periodically, on Close
//     and on demand to a CheckpointSink outside the database (a file the
//     database role cannot write, FileSink). A superuser who bypasses the
//     triggers (session_replication_role = replica) and recomputes every
//     hash after an edit produces a consistent chain, but its hash at a
//     checkpointed seq no longer matches the signed checkpoint; deleting the
//     tail leaves the database's last seq below the checkpoint's.
//
// Limits, stated plainly: records appended after the newest checkpoint are
// protected by the chain only — a superuser can delete or rewrite that tail
// unnoticed (Verify cannot tell "never written" from "deleted after the last
// checkpoint"). The checkpoint interval (FHIRGATE_AUDIT_CHECKPOINT_INTERVAL)
// bounds that window. The gateway process itself can write the checkpoint
// file; mark it append-only (chattr +a) or ship checkpoints to WORM storage
// or a witness for protection against a compromised gateway host.
//
// # Canonical encoding (format 1)
//
// hash = SHA-256 of the concatenation of
//
//	"fhirgate.audit.v1\x00"     domain separation, 18 bytes
//	seq                          uint64, big-endian
//	prev_hash                    32 bytes
//	time                         int64 big-endian, Unix microseconds (UTC)
//	request_id, tenant, subject_id, subject_kind, client_id, token_id, ip,
//	interaction, resource_type   each a string
//	resource_ids, patient_ids    each a list
//	query                        bytes: as stored (the sealed ciphertext, or
//	                             the plain query when PHI encryption is off)
//	query_sealed                 1 byte, 0 or 1
//	purpose_of_use, decision_id,
//	reason                       each a string
//	break_glass                  1 byte, 0 or 1
//	outcome, action              each a string
//
// where a string or bytes value is uint32 big-endian length then the bytes
// (UTF-8 for strings), and a list is uint32 big-endian count then each
// element as a string. The format number is the row's "format" column; a
// new encoding gets a new number and domain tag and old rows keep theirs.
//
// # Group commit
//
// Append enqueues the record and blocks until its batch commits. One writer
// goroutine per Log takes what is queued (up to Options.MaxBatch; batches
// form while the previous commit is in flight, and Options.MaxWait can add
// a short wait for more) and writes it in one transaction: pg_advisory_xact_lock on a fixed key
// (several gateway processes serialize there), read the last (seq, hash),
// chain the batch in Go, insert it with one INSERT ... SELECT FROM unnest,
// commit with synchronous_commit on. So a durable commit is shared by many
// requests instead of one fsync per request.
package audit
