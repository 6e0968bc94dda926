//go:build !linux

package vaulttest

import "syscall"

// sysProcAttr: without Pdeathsig, only Main stops the dev server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
