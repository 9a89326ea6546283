package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsNeverPrinted is Prometheus's TestElideSecrets for every way a config gets printed.
func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("FILE-api-key-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"TOKEN":   "ENV-oauth-token-secret",
		"ENC":     "ENV-encryption-secret",
		"REDISPW": "ENV-redis-password-secret",
		"ADMIN":   "ENV-admin-key-secret",
	}
	data := []byte(`version: 1
store:
  redis:
    url: redis://user:URL-redis-password-secret@127.0.0.1:6379/0
  encryption_key: ${ENC}
accounts:
  - name: a
    plan: max
    oauth_token: ${TOKEN}
  - name: b
    api_key_file: key
  - name: c
    api_key: LITERAL-api-key-secret
admin:
  key: ${ADMIN}
`)
	path := filepath.Join(dir, "claude-lb.yaml")
	c, err := ParseWith(path, data, Options{CheckEnv: true, Env: lookup(env)})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"ENV-oauth-token-secret", "ENV-encryption-secret", "ENV-admin-key-secret",
		"FILE-api-key-secret", "LITERAL-api-key-secret", "URL-redis-password-secret"}
	// The secrets are really there, for the one place that sends them.
	if c.Accounts[0].OAuthToken.Reveal() != secrets[0] || c.Accounts[1].APIKey.Reveal() != secrets[3] || c.Store.Redis.Password.Reveal() != secrets[5] {
		t.Fatalf("secrets not loaded: %q %q %q", c.Accounts[0].OAuthToken.Reveal(), c.Accounts[1].APIKey.Reveal(), c.Store.Redis.Password.Reveal())
	}

	var outputs []string
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(j))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%t"} {
		outputs = append(outputs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, *c), fmt.Sprintf(verb, c.Accounts), fmt.Sprintf(verb, c.Store.Redis),
			fmt.Sprintf(verb, c.Store), fmt.Sprintf(verb, c.Accounts[0].OAuthToken))
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		l := slog.New(h)
		l.Info("config", "config", c, "account", c.Accounts[0], "key", c.Accounts[1].APIKey, "store", c.Store)
	}
	outputs = append(outputs, logs.String(), strings.Join(c.Warnings, "\n"))
	for _, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("output shows secret %q:\n%s", s, out)
			}
		}
	}
	if !strings.Contains(logs.String(), "<secret>") {
		t.Errorf("redacted values missing from the logs: %s", logs.String())
	}
}

// TestSecretsNotInErrors feeds files whose problems involve secrets.
func TestSecretsNotInErrors(t *testing.T) {
	const s = "sk-ant-api03-SECRET-value"
	files := []string{
		"version: 1\naccounts:\n  - name: a\n    api_key: [" + s + "]\n",
		"version: 1\naccounts:\n  - name: a\n    api_key: {k: " + s + "}\n",
		"version: 1\naccounts:\n  - name: a\n    api_kye: " + s + "\n",
		"version: 1\naccounts:\n  - name: a\n    api_key: \"${" + s + "\"\n",
		"version: 1\naccounts:\n  - name: a\n    api_key: \"${X}" + s + "${\"\n",
		"version: 1\naccounts:\n  - {name: a, api_key: " + s + "}\n  - {name: b, api_key: " + s + "}\n",
		"version: 1\nupstream:\n  url: https://u:" + s + "@example.test\naccounts: [{name: a, api_key: k}]\n",
		"version: 1\nstore:\n  redis:\n    url: \"redis://:" + s + "@[::1\"\naccounts: [{name: a, api_key: k}]\n",
		"version: 1\nrouting:\n  max_attempts: " + s + "\naccounts: [{name: a, api_key: k}]\n",
		"version: 1\nadmin:\n  key: " + s + "\n  key_file: /x\naccounts: [{name: a, api_key: k}]\n",
	}
	for i, f := range files {
		_, err := ParseWith("s.yaml", []byte(f), Options{CheckEnv: true, Env: lookup(nil)})
		var cerr *Error
		if !errors.As(err, &cerr) {
			t.Errorf("file %d: want problems, got %v", i, err)
			continue
		}
		all := err.Error() + strings.Join(cerr.Warnings, "\n")
		if strings.Contains(all, "SECRET") {
			t.Errorf("file %d: error shows the secret:\n%s", i, all)
		}
	}
}
