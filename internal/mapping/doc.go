// Package mapping turns parsed HL7 v2 messages into FHIR R4 resources
// following declarative mappings that live outside Go (the mappings/
// folder: message and segment maps, code maps and per-EMR source
// profiles), so an integration engineer changes a mapping without
// recompiling. It also scores its output against reference bundles.
//
// An Engine is immutable once Load returns it and is safe for concurrent
// use; reloading means calling Load again and swapping the pointer. Map
// gives every resource a stable id derived from the tenant, the sender and
// the business identifiers in the message, so a re-sent or updated
// message updates the same resources.
//
// The package must never log, and its errors and warnings must never
// quote, message content: HL7 v2 messages carry PHI. Errors name the
// segment, field, repetition and component, never the value. It never
// stores anything; the caller decides what to write.
package mapping

//go:generate go run ./gen -in ../../../shared/fhir-r4/v2-tables.json -out v2tables.tsv.gz
