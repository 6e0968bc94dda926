package search

//go:generate go run ./internal/gen
