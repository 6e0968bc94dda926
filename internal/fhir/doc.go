// Package fhir holds the small core every other package shares: the error
// kinds that decide HTTP status and OperationOutcome, and a lossless handle on
// a resource's JSON.
//
// Resources are kept as the client's bytes. Reads of their content go
// through a generic decoded form (numbers as json.Number, so 1.50 stays
// 1.50); the few server-side edits (id, meta.versionId, meta.lastUpdated,
// reference rewriting in transactions) are made on the bytes, so unknown
// elements, primitive extensions, key order and decimal precision survive.
// The package never round-trips a resource through typed structs, and never
// logs resource content (it may hold PHI).
package fhir
