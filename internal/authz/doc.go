// Package authz decides who may do what to which FHIR resources: it
// evaluates the Rego policies in policies/ with an embedded Open Policy
// Agent (prepared queries, shared across goroutines) and turns their answer
// into a Decision for one resource, or into a Filter for a resource type
// that the API compiles into SQL so that a denied resource never appears in
// a search, history page, include or count.
//
// The policy input is the subject (roles, SMART scopes, patient context,
// organization, care team, purpose of use, consents, sources), the action
// (interaction, type, id, search parameters), the resource's attributes
// (Attributes: patient compartments, managing organization, meta.security
// codes, source, token index rows) and the environment (time, client IP).
// See policies/authz.rego for the shape and the shipped rules.
//
// It fails closed: a policy error, an undefined result or an evaluation
// that exceeds its deadline (250 ms by default) is a deny with reason
// "policy-error", returned together with the error for logging. A policy
// directory that does not parse or compile is refused by Load and Reload
// with the file and line at fault, and Reload keeps the previous policy.
//
// It never sees or logs resource content beyond the attributes above, and
// its reasons are rule names only: no ids, codes or values, since they are
// written to the audit log in clear.
package authz
