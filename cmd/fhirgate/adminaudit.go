package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/user"
	"time"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/ingest"
)

// auditAdmin appends the audit record of an administrative command (key
// rotation, re-encryption, shredding) to the access log: who ran it (the
// operating-system user), what, and whether it succeeded. A command whose
// record cannot be written reports that as an error of its own.
func auditAdmin(ctx context.Context, interaction string, opErr error, logger *slog.Logger) error {
	dbc, err := database.ConfigFromEnv()
	if err != nil || dbc.URL == "" {
		return errors.Join(opErr, errors.New("the access log: DATABASE_URL is not set, so this command could not be audited"))
	}
	pool, err := database.Open(ctx, dbc)
	if err != nil {
		return errors.Join(opErr, err)
	}
	defer pool.Close()
	c, err := auditConfigFromEnv(dataDirFromEnv())
	if err != nil {
		return errors.Join(opErr, err)
	}
	log, closeLog, err := openAuditLog(pool, nil, c, logger)
	if err != nil {
		return errors.Join(opErr, err)
	}
	who := "cli"
	if u, err := user.Current(); err == nil {
		who = "cli:" + u.Username
	}
	host, _ := os.Hostname()
	rec := audit.Record{RequestID: ingest.NewID(), SubjectID: who, SubjectKind: "admin", IP: host,
		Interaction: interaction, Action: audit.ActionExecute, Outcome: "200"}
	if opErr != nil {
		// Outcomes are the audit vocabulary (audit.Success): HTTP-style
		// statuses or HL7 ACK codes, so reports count them right.
		rec.Outcome, rec.Reason = "500", "the command failed"
	}
	aerr := log.Append(ctx, rec)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return errors.Join(opErr, aerr, closeLog(cctx))
}
