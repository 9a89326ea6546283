//go:build unix

package config

import (
	"os"
	"syscall"
)

// chownLike gives f the owner and group of the file fi describes, when the process may (root
// editing a file owned by the service user); otherwise it leaves f as created.
func chownLike(f *os.File, fi os.FileInfo) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
}
