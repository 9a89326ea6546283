package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exampleEnv holds every variable the examples, the root claude-lb.yaml and the starter use
// without a default.
var exampleEnv = map[string]string{
	"PERSONAL_API_KEY":         "sk-ant-api03-example-personal",
	"WORK_OAUTH_TOKEN":         "sk-ant-oat01-example-work",
	"COMPANY_OAUTH_TOKEN":      "sk-ant-oat01-example-company",
	"CLAUDE_LB_ENCRYPTION_KEY": "example-encryption-key",
	"CI_KEY_SHA256":            "1f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	"BUILD_SERVER_KEY_SHA256":  "2f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}

type fakeInfo struct{ dir bool }

func (f fakeInfo) Name() string { return "f" }
func (f fakeInfo) Size() int64  { return 0 }
func (f fakeInfo) Mode() fs.FileMode {
	return map[bool]fs.FileMode{true: fs.ModeDir | 0o755, false: 0o600}[f.dir]
}
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.dir }
func (f fakeInfo) Sys() any           { return nil }

// exampleOptions pretends that every secret file exists and holds "secret from PATH", and that
// every oauth_file is yet to be written into an existing folder.
func exampleOptions(checkEnv bool) Options {
	return Options{
		CheckEnv: checkEnv,
		Env:      lookup(exampleEnv),
		ReadFile: func(p string) ([]byte, error) { return []byte("secret from " + p + "\n"), nil },
		Stat: func(p string) (fs.FileInfo, error) {
			if strings.HasSuffix(p, ".json") {
				return nil, fs.ErrNotExist
			}
			return fakeInfo{dir: true}, nil
		},
	}
}

func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	sub, _ := filepath.Glob("../examples/*/*.yaml")
	files = append(files, sub...)
	if err != nil || len(files) < 7 {
		t.Fatalf("want at least 6 examples, found %v (%v)", files, err)
	}
	files = append(files, "../claude-lb.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := LoadWith(f, exampleOptions(true))
			if err != nil {
				t.Fatalf("%v", err)
			}
			if len(c.Warnings) != 0 {
				t.Errorf("examples should not warn: %q", c.Warnings)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			// CI without secrets: valid too.
			if _, err := LoadWith(f, Options{Env: lookup(nil)}); err != nil {
				t.Errorf("without CheckEnv and without variables: %v", err)
			}
		})
	}
	c, err := LoadWith("../examples/mixed.yaml", exampleOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Accounts) != 2 || c.Accounts[0].Name != "personal" || c.Accounts[0].Plan != "console" ||
		c.Accounts[1].Name != "work" || c.Accounts[1].Plan != "max" || c.Accounts[1].CredentialKind() != CredOAuthToken {
		t.Errorf("mixed.yaml is not the original tool's setup: %+v", c.Accounts)
	}
}

func TestStarter(t *testing.T) {
	if !strings.Contains(Starter, "\n# ") || !strings.HasPrefix(Starter, "#") {
		t.Error("the starter config should be commented")
	}
	c, err := ParseWith("claude-lb.yaml", []byte(Starter), Options{Env: lookup(nil)})
	if err != nil {
		t.Fatalf("starter without CheckEnv: %v", err)
	}
	if len(c.Accounts) != 1 || len(c.Warnings) != 0 {
		t.Errorf("starter: %d accounts, warnings %q", len(c.Accounts), c.Warnings)
	}
	_, err = ParseWith("claude-lb.yaml", []byte(Starter), Options{CheckEnv: true, Env: lookup(nil)})
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 1 || !strings.Contains(cerr.Problems[0].Msg, "${PERSONAL_API_KEY}, which is not set") {
		t.Errorf("starter with CheckEnv and no variables: %v", err)
	}
	c, err = ParseWith("claude-lb.yaml", []byte(Starter), Options{CheckEnv: true, Env: lookup(exampleEnv)})
	if err != nil {
		t.Fatalf("starter with its variable set: %v", err)
	}
	if c.Accounts[0].APIKey.Reveal() != exampleEnv["PERSONAL_API_KEY"] {
		t.Errorf("starter account = %+v", c.Accounts[0])
	}
}

// TestDocsListEveryKey keeps docs/configuration.md complete: every key of the schema appears
// in it, in backquotes.
func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(reflect.Type, string)
	walk = func(rt reflect.Type, prefix string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt == durationType {
			return
		}
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			if !bytes.Contains(doc, []byte("`"+tag+"`")) && !bytes.Contains(doc, []byte("."+tag+"`")) &&
				!bytes.Contains(doc, []byte("`"+tag+".")) && !bytes.Contains(doc, []byte("/ `"+tag)) {
				t.Errorf("docs/configuration.md does not describe %s%s", prefix, tag)
			}
			walk(f.Type, prefix+tag+".")
		}
	}
	walk(reflect.TypeFor[Config](), "")

	// The anchor example in the docs works.
	data := []byte("version: 1\nx-max: &max {plan: max}\naccounts:\n  - {<<: *max, name: work, oauth_token: \"${WORK_OAUTH_TOKEN}\"}\n")
	c, err := ParseWith("doc.yaml", data, exampleOptions(true))
	if err != nil || c.Accounts[0].Plan != "max" {
		t.Errorf("docs anchor example: %v", err)
	}
}
