package vaulttest

import "syscall"

// sysProcAttr makes the kernel kill the dev server when the test binary
// dies without running Main's cleanup (panic, timeout, signal).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
