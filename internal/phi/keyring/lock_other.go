//go:build !unix

package keyring

// lockFile is a no-op where flock is unavailable: writers in one process
// are still serialised by Keyring.write, but several processes must not
// rotate the same keyring at once.
func lockFile(path string) (unlock func(), err error) {
	return func() {}, nil
}
