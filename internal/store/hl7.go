package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// HL7Record is one accepted HL7 v2 message, archived with its ACK.
type HL7Record struct {
	Sender, ControlID string
	ReceivedAt        time.Time
	MessageType       string
	MappingVersion    string
	Resources         int
	ProvenanceID      string
	ACK               []byte
	Raw               []byte // PHI
}

// HL7Ack returns the ACK sent for an accepted message, ok=false when the
// sender has sent no accepted message with that control id.
func (s *Store) HL7Ack(ctx context.Context, tenant, sender, controlID string) (ack []byte, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT ack FROM hl7_messages WHERE tenant = $1 AND sender = $2 AND control_id = $3`,
		tenant, sender, controlID).Scan(&ack)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, classify("store: hl7 ack", err)
	}
	return ack, true, nil
}

// RecordHL7 archives an accepted message in the Tx that stores what it
// produced, so the ACK is durable exactly when the resources are. A
// concurrent duplicate loses with ErrRetry, and its retry finds this ACK.
func (t *Tx) RecordHL7(ctx context.Context, r HL7Record) error {
	raw, epoch, err := sealRaw(ctx, t.sealer, t.tenant, "hl7_messages", r.Sender, r.ControlID, r.Raw)
	if err != nil {
		return err
	}
	// Sent with the Tx's last flush: no round trip of its own.
	t.extra = append(t.extra, queued{`INSERT INTO hl7_messages (tenant, sender, control_id, received_at, message_type,
			mapping_version, resources, provenance_id, ack, raw, phi_epoch)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		[]any{t.tenant, r.Sender, r.ControlID, r.ReceivedAt, r.MessageType, r.MappingVersion, r.Resources, r.ProvenanceID, r.ACK, raw, epoch}})
	return nil
}

// sealRaw seals a raw message (all of it is PHI), bound to its table,
// sender and control id.
func sealRaw(ctx context.Context, sl Sealer, tenant, table, sender, controlID string, raw []byte) ([]byte, int, error) {
	if sl == nil {
		return raw, 0, nil
	}
	return sl.SealBlob(ctx, tenant, table, sender+"|"+controlID, raw)
}

func openRaw(ctx context.Context, sl Sealer, tenant, table, sender, controlID string, raw []byte) ([]byte, error) {
	if sl == nil {
		return raw, nil
	}
	return sl.OpenBlob(ctx, tenant, table, sender+"|"+controlID, raw)
}

// HL7Raw returns an archived message's raw text, decrypted.
func (s *Store) HL7Raw(ctx context.Context, tenant, sender, controlID string) ([]byte, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT raw FROM hl7_messages WHERE tenant = $1 AND sender = $2 AND control_id = $3`,
		tenant, sender, controlID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fhir.Errorf(fhir.KindNotFound, "", "no archived message from that sender with that control id")
	}
	if err != nil {
		return nil, classify("store: hl7 raw", err)
	}
	return openRaw(ctx, s.sealer, tenant, "hl7_messages", sender, controlID, raw)
}

// DeadLetter is a rejected HL7 v2 message.
type DeadLetter struct {
	ID                int64
	Sender, ControlID string
	ReceivedAt        time.Time
	AckCode           string
	Reason            string // locations and rules, never values
	Raw               []byte // PHI
	Attempts          int
}

// AddDeadLetter stores a rejected message durably.
func (s *Store) AddDeadLetter(ctx context.Context, tenant string, d DeadLetter) (int64, error) {
	raw, epoch, err := sealRaw(ctx, s.sealer, tenant, "hl7_dead_letters", d.Sender, d.ControlID, d.Raw)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.pool.QueryRow(ctx, `INSERT INTO hl7_dead_letters (tenant, sender, control_id, received_at, ack_code, reason, raw, phi_epoch)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
		tenant, d.Sender, d.ControlID, d.ReceivedAt, d.AckCode, d.Reason, raw, epoch).Scan(&id)
	return id, classify("store: dead letter", err)
}

// PendingDeadLetters lists dead letters not yet replayed successfully, oldest
// first, after id afterID.
func (s *Store) PendingDeadLetters(ctx context.Context, tenant string, afterID int64, limit int) ([]DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, sender, control_id, received_at, ack_code, reason, raw, attempts
		FROM hl7_dead_letters WHERE tenant = $1 AND replayed_at IS NULL AND id > $2 ORDER BY id LIMIT $3`,
		tenant, afterID, limit)
	if err != nil {
		return nil, classify("store: dead letters", err)
	}
	ds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		err := row.Scan(&d.ID, &d.Sender, &d.ControlID, &d.ReceivedAt, &d.AckCode, &d.Reason, &d.Raw, &d.Attempts)
		return d, err
	})
	if err != nil {
		return nil, classify("store: dead letters", err)
	}
	for i := range ds {
		if ds[i].Raw, err = openRaw(ctx, s.sealer, tenant, "hl7_dead_letters", ds[i].Sender, ds[i].ControlID, ds[i].Raw); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// ResolveDeadLetter records a replay: accepted marks it replayed; otherwise
// the attempt is counted and the new reason kept.
func (s *Store) ResolveDeadLetter(ctx context.Context, tenant string, id int64, accepted bool, reason string) error {
	var err error
	if accepted {
		_, err = s.pool.Exec(ctx, `UPDATE hl7_dead_letters SET replayed_at = now(), attempts = attempts + 1
			WHERE tenant = $1 AND id = $2`, tenant, id)
	} else {
		_, err = s.pool.Exec(ctx, `UPDATE hl7_dead_letters SET attempts = attempts + 1, reason = $3
			WHERE tenant = $1 AND id = $2`, tenant, id, reason)
	}
	return classify("store: resolve dead letter", err)
}

// HL7Key names an HL7 v2 message by its sender and control id (MSH-10).
type HL7Key struct{ Sender, ControlID string }

// HL7Acks returns, inside the Tx, the ACKs of the messages among keys that
// were accepted before (one query for a whole batch of messages).
func (t *Tx) HL7Acks(ctx context.Context, keys []HL7Key) (map[HL7Key][]byte, error) {
	if err := t.Flush(ctx); err != nil {
		return nil, err
	}
	senders := make([]string, len(keys))
	cids := make([]string, len(keys))
	for i, k := range keys {
		senders[i], cids[i] = k.Sender, k.ControlID
	}
	rows, err := t.tx.Query(ctx, `SELECT m.sender, m.control_id, m.ack FROM hl7_messages m
		JOIN unnest($2::text[], $3::text[]) AS k(sender, control_id) ON m.sender = k.sender AND m.control_id = k.control_id
		WHERE m.tenant = $1`, t.tenant, senders, cids)
	if err != nil {
		return nil, classify("store: hl7 acks", err)
	}
	defer rows.Close()
	out := map[HL7Key][]byte{}
	for rows.Next() {
		var k HL7Key
		var ack []byte
		if err := rows.Scan(&k.Sender, &k.ControlID, &ack); err != nil {
			return nil, classify("store: hl7 acks", err)
		}
		out[k] = ack
	}
	return out, classify("store: hl7 acks", rows.Err())
}
