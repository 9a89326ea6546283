package config

import _ "embed"

// Starter is the commented starter config `claude-lb init` writes. It is valid as is (its one
// account's key comes from ${PERSONAL_API_KEY}) and loads once that variable is set.
//
//go:embed starter.yaml
var Starter string
