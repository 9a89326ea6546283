package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// editSources are config texts in the shapes people write lists in.
var editSources = map[string]string{
	"design": `version: 1
listen: 127.0.0.1:8080            # env PORT, when set, replaces the port
accounts:
  - name: work
    plan: max
    oauth_token: ${WORK_OAUTH_TOKEN}      # sent as Authorization: Bearer
  - name: team
    plan: max
    oauth_file: /var/lib/claude-lb/team.json  # refreshable tokens
  - name: personal
    plan: console
    api_key_file: /run/secrets/personal   # sent as x-api-key
    # models: ["claude-*haiku*"]          # optional: narrows what this account may serve
    # weight: 1, priority: 0, disabled: false
clients:                          # who may call the gateway; see section 8
  - name: laptop
    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
history:
  size: 1000                      # requests kept in the history
`,
	"zero indent, blank lines, head comments": `version: 1

accounts:
# the first one
- name: a
  plan: console
  api_key: ${A_KEY}

# the second one
- name: b
  plan: max
  oauth_token: ${B_TOKEN}

admin:
  key: ${ADMIN}
`,
	"commented-out entries after the list": `version: 1
accounts:
    -   name: a
        plan: console
        api_key: ${A_KEY}
    # - name: old
    #   plan: max
# trailing comment
`,
	"crlf and no final newline": "version: 1\r\naccounts:\r\n  - name: a\r\n    api_key: ${A_KEY}\r\n    models:\r\n      - claude-*haiku*",
	"block scalar inside an entry": `version: 1
accounts:
  - name: a
    api_key: ${A_KEY}
    models:
      - "claude-*sonnet*"
  - name: notes
    api_key: ${N_KEY}
    models: [claude-*haiku*]
plans:
  console: |
    Pro plan,
    API keys
`,
	"dash on its own line": `version: 1
accounts:
  -
    name: a
    api_key: ${A_KEY}
`,
	"empty accounts key": `version: 1
accounts:
  # none yet
listen: 127.0.0.1:9000
`,
	"empty accounts key, blank after": "version: 1\naccounts:\n\nlisten: 127.0.0.1:9000\n",
	"no accounts key": `version: 1
listen: 127.0.0.1:9000 # no newline after this`,
	"empty file": ``,
}

var newAccounts = []NewAccount{
	{Name: "fresh", Plan: "max", OAuthTokenEnv: "FRESH_TOKEN"},
	{Name: "console-2", APIKeyEnv: "C2_KEY"},
	{Name: "filed.3", Plan: "console", APIKeyFile: "/run/secrets/with space"},
	{Name: "oauth_4", Plan: "max", OAuthFile: "tokens/oauth_4.json"},
}

func TestAddRemoveRoundTrip(t *testing.T) {
	for name, src := range editSources {
		for _, a := range newAccounts {
			t.Run(name+"/"+a.Name, func(t *testing.T) {
				added, err := AddAccount([]byte(src), a)
				if err != nil {
					t.Fatal(err)
				}
				// The new entry is a real list item with the right fields.
				var got struct {
					Accounts []map[string]any `yaml:"accounts"`
				}
				if err := yaml.Unmarshal(added, &got); err != nil {
					t.Fatalf("added text is not YAML: %v\n%s", err, added)
				}
				last := got.Accounts[len(got.Accounts)-1]
				want := map[string]any{"name": a.Name}
				if a.Plan != "" {
					want["plan"] = a.Plan
				}
				switch {
				case a.OAuthTokenEnv != "":
					want["oauth_token"] = "${" + a.OAuthTokenEnv + "}"
				case a.APIKeyEnv != "":
					want["api_key"] = "${" + a.APIKeyEnv + "}"
				case a.APIKeyFile != "":
					want["api_key_file"] = a.APIKeyFile
				case a.OAuthFile != "":
					want["oauth_file"] = a.OAuthFile
				}
				if len(last) != len(want) {
					t.Errorf("new entry %v, want %v\n%s", last, want, added)
				}
				for k, v := range want {
					if last[k] != v {
						t.Errorf("new entry %s = %v, want %v\n%s", k, last[k], v, added)
					}
				}
				// Everything that was there is still there, in order.
				if !strings.HasPrefix(string(added), src[:strings.Index(src+"accounts:", "accounts:")]) {
					t.Errorf("the text before the list changed:\n%s", added)
				}
				back, err := RemoveAccount(added, a.Name)
				if err != nil {
					t.Fatal(err)
				}
				if name == "no accounts key" || name == "empty file" {
					return // the new accounts: key stays; checked in TestAddAccountShapes
				}
				if string(back) != src {
					t.Errorf("add then remove changed the file:\n--- before\n%q\n--- after\n%q", src, back)
				}
			})
		}
	}
}

// TestAddAccountShapes pins the exact text written for a few list shapes.
func TestAddAccountShapes(t *testing.T) {
	a := NewAccount{Name: "fresh", Plan: "max", OAuthTokenEnv: "FRESH_TOKEN"}
	tests := []struct{ name, src, want string }{
		{"design: after the last entry's inner comments", editSources["design"],
			strings.Replace(editSources["design"], "    # weight: 1, priority: 0, disabled: false\n",
				"    # weight: 1, priority: 0, disabled: false\n  - name: fresh\n    plan: max\n    oauth_token: ${FRESH_TOKEN}\n", 1)},
		{"zero indent", editSources["zero indent, blank lines, head comments"],
			strings.Replace(editSources["zero indent, blank lines, head comments"], "  oauth_token: ${B_TOKEN}\n",
				"  oauth_token: ${B_TOKEN}\n- name: fresh\n  plan: max\n  oauth_token: ${FRESH_TOKEN}\n", 1)},
		{"wide spacing kept, before dash-level comments", editSources["commented-out entries after the list"],
			strings.Replace(editSources["commented-out entries after the list"], "        api_key: ${A_KEY}\n",
				"        api_key: ${A_KEY}\n    -   name: fresh\n        plan: max\n        oauth_token: ${FRESH_TOKEN}\n", 1)},
		{"crlf, no final newline", editSources["crlf and no final newline"],
			editSources["crlf and no final newline"] + "\r\n  - name: fresh\r\n    plan: max\r\n    oauth_token: ${FRESH_TOKEN}"},
		{"empty key", editSources["empty accounts key"],
			"version: 1\naccounts:\n  - name: fresh\n    plan: max\n    oauth_token: ${FRESH_TOKEN}\n  # none yet\nlisten: 127.0.0.1:9000\n"},
		{"no key", editSources["no accounts key"],
			editSources["no accounts key"] + "\naccounts:\n  - name: fresh\n    plan: max\n    oauth_token: ${FRESH_TOKEN}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AddAccount([]byte(tt.src), a)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestRemoveAccount(t *testing.T) {
	src := editSources["zero indent, blank lines, head comments"]
	tests := []struct{ name, remove, want string }{
		{"first, with its head comment and one blank line", "a",
			"version: 1\n\naccounts:\n# the second one\n- name: b\n  plan: max\n  oauth_token: ${B_TOKEN}\n\nadmin:\n  key: ${ADMIN}\n"},
		{"last, with its head comment", "b",
			"version: 1\n\naccounts:\n# the first one\n- name: a\n  plan: console\n  api_key: ${A_KEY}\n\nadmin:\n  key: ${ADMIN}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RemoveAccount([]byte(src), tt.remove)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	// The design example: removing the middle entry leaves the others untouched.
	got, err := RemoveAccount([]byte(editSources["design"]), "team")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(editSources["design"], "  - name: team\n    plan: max\n    oauth_file: /var/lib/claude-lb/team.json  # refreshable tokens\n", "", 1)
	if string(got) != want {
		t.Errorf("remove team:\n%s", got)
	}
}

func TestEditErrors(t *testing.T) {
	design := editSources["design"]
	tests := []struct {
		name   string
		run    func() ([]byte, error)
		is     error
		substr string
	}{
		{"duplicate", func() ([]byte, error) {
			return AddAccount([]byte(design), NewAccount{Name: "team", Plan: "max", OAuthTokenEnv: "X"})
		}, ErrAccountExists, `line 7: an account named "team" already exists`},
		{"remove unknown", func() ([]byte, error) { return RemoveAccount([]byte(design), "nobody") }, ErrAccountNotFound, "accounts: work, team, personal"},
		{"remove from a file without accounts", func() ([]byte, error) { return RemoveAccount([]byte("version: 1\n"), "x") }, ErrAccountNotFound, "no accounts list"},
		{"flow style", func() ([]byte, error) {
			return AddAccount([]byte("accounts: [{name: a, api_key: x}]\n"), NewAccount{Name: "b", APIKeyEnv: "B"})
		}, nil, "flow style"},
		{"two credentials", func() ([]byte, error) {
			return AddAccount([]byte(design), NewAccount{Name: "b", APIKeyEnv: "B", APIKeyFile: "/x"})
		}, nil, "exactly one credential"},
		{"no credential", func() ([]byte, error) { return AddAccount([]byte(design), NewAccount{Name: "b"}) }, nil, "exactly one credential"},
		{"bad env name", func() ([]byte, error) {
			return AddAccount([]byte(design), NewAccount{Name: "b", APIKeyEnv: "sk-ant-api03-oops"})
		}, nil, "not an environment variable name"},
		{"bad account name", func() ([]byte, error) {
			return AddAccount([]byte(design), NewAccount{Name: "a b: c", APIKeyEnv: "B"})
		}, nil, "account name"},
		{"not YAML", func() ([]byte, error) {
			return AddAccount([]byte("accounts:\n  - name: [\n"), NewAccount{Name: "b", APIKeyEnv: "B"})
		}, nil, "not valid YAML"},
		{"accounts is a mapping", func() ([]byte, error) {
			return AddAccount([]byte("accounts:\n  a: 1\n"), NewAccount{Name: "b", APIKeyEnv: "B"})
		}, nil, "must be a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.run()
			if err == nil {
				t.Fatalf("no error; got\n%s", out)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q lacks %q", err, tt.substr)
			}
		})
	}
}

// TestAddedAccountValidates runs the result through the real loader: the entry is an account
// of the config, with the credential kind asked for.
func TestAddedAccountValidates(t *testing.T) {
	src := []byte("version: 1\naccounts:\n  - name: personal\n    plan: console\n    api_key: ${P_KEY}\n")
	out, err := AddAccount(src, NewAccount{Name: "work", Plan: "max", OAuthTokenEnv: "WORK_TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"P_KEY": "sk-ant-api03-aaaaaaaaaaaaaaaa", "WORK_TOKEN": "sk-ant-oat01-bbbbbbbbbbbbbbbbbbbb"}
	cfg, err := Parse("claude-lb.yaml", out, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Accounts) != 2 || cfg.Accounts[1].Name != "work" || cfg.Accounts[1].Plan != "max" ||
		cfg.Accounts[1].CredentialKind() != CredOAuthToken || cfg.Accounts[1].OAuthToken.Reveal() != env["WORK_TOKEN"] {
		t.Errorf("accounts %+v", cfg.Accounts)
	}
}

func TestYAMLScalar(t *testing.T) {
	tests := map[string]string{
		"work":             "work",
		"/run/secrets/p":   "/run/secrets/p",
		"true":             `"true"`,
		"null":             `"null"`,
		"123":              `"123"`,
		"1.5":              `"1.5"`,
		"with space":       `"with space"`,
		"a: b":             `"a: b"`,
		"#x":               `"#x"`,
		"tokens/team.json": "tokens/team.json",
	}
	for in, want := range tests {
		if got := yamlScalar(in); got != want {
			t.Errorf("yamlScalar(%q) = %s, want %s", in, got, want)
		}
		var v struct{ V string }
		if err := yaml.Unmarshal([]byte("v: "+yamlScalar(in)), &v); err != nil || v.V != in {
			t.Errorf("%q does not read back: %q %v", in, v.V, err)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	if err := os.WriteFile(real, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(real, 0o640); err != nil { // umask-proof
		t.Fatal(err)
	}
	link := filepath.Join(dir, "claude-lb.yaml")
	if err := os.Symlink("real.yaml", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("new contents\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(real)
	if err != nil || string(b) != "new contents\n" {
		t.Fatalf("target holds %q, %v", b, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if fi, _ := os.Stat(real); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("files left behind: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing.yaml"), []byte("x")); err == nil {
		t.Error("writing over a missing file succeeded")
	}
}

// FuzzAddRemove: whatever YAML AddAccount accepts, RemoveAccount of the same name gives back.
func FuzzAddRemove(f *testing.F) {
	for _, src := range editSources {
		f.Add(src, "fresh")
	}
	f.Add("accounts:\n - name: x\n   api_key: y\n", "z")
	f.Fuzz(func(t *testing.T, src, name string) {
		a := NewAccount{Name: name, Plan: "max", OAuthTokenEnv: "T"}
		var root yaml.Node
		if yaml.Unmarshal([]byte(src), &root) != nil {
			return
		}
		if _, seq := findAccountsIn(&root); seq == nil || seq.Kind != yaml.SequenceNode {
			return // new keys are appended; nothing to give back
		}
		added, err := AddAccount([]byte(src), a)
		if err != nil {
			return
		}
		back, err := RemoveAccount(added, name)
		if err != nil {
			t.Fatalf("remove after add: %v\n%q", err, added)
		}
		if string(back) != src {
			t.Fatalf("round trip:\n%q\n%q\n%q", src, added, back)
		}
	})
}

func findAccountsIn(doc *yaml.Node) (key, value *yaml.Node) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil
	}
	return findAccounts(doc.Content[0])
}
