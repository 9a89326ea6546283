//go:build !unix

package config

import "os"

// chownLike is a no-op where files have no Unix owner.
func chownLike(*os.File, os.FileInfo) {}
