// Command vault is an unmodified HashiCorp Vault built from the Go module
// proxy, used only as the dev server that fhirgate's key-provider tests run
// against (`vault server -dev`). It is a separate module so that Vault's
// dependency tree never enters fhirgate's go.mod. Never ship this binary.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
