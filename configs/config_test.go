package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestExampleParsesToDefault(t *testing.T) {
	cfg, err := Parse(Example)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("example differs from Default():\n got %+v\nwant %+v", cfg, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

// structKeys lists the dotted YAML keys of every leaf field of a struct type.
func structKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		keys = append(keys, key)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			keys = append(keys, structKeys(f.Type, key+".")...)
		}
	}
	return keys
}

// exampleKeys lists the dotted keys of the example and those that have no comment of their own.
func exampleKeys(t *testing.T) (keys, uncommented []string) {
	var doc yaml.Node
	if err := yaml.Unmarshal(Example, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			keys = append(keys, key)
			// The document's first key carries the file header as its head comment, which is fine too.
			if strings.TrimSpace(k.HeadComment) == "" && strings.TrimSpace(k.LineComment) == "" {
				uncommented = append(uncommented, key)
			}
			if v.Kind == yaml.MappingNode {
				walk(v, key+".")
			}
		}
	}
	walk(doc.Content[0], "")
	return keys, uncommented
}

func TestExampleDocumentsEveryKey(t *testing.T) {
	want := structKeys(reflect.TypeOf(Config{}), "")
	got, uncommented := exampleKeys(t)
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		var missing, extra []string
		for _, k := range want {
			if !slices.Contains(got, k) {
				missing = append(missing, k)
			}
		}
		for _, k := range got {
			if !slices.Contains(want, k) {
				extra = append(extra, k)
			}
		}
		t.Errorf("configs/passerelle.example.yaml is out of date: missing keys %v, unknown keys %v", missing, extra)
	}
	if len(uncommented) > 0 {
		t.Errorf("keys without a comment in the example: %v", uncommented)
	}
	// Leaf comments state the default, so a reader never has to look it up.
	var doc yaml.Node
	_ = yaml.Unmarshal(Example, &doc)
	var noDefault []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.MappingNode {
				walk(v, prefix+k.Value+".")
			} else if !strings.Contains(k.HeadComment, "Default:") {
				noDefault = append(noDefault, prefix+k.Value)
			}
		}
	}
	walk(doc.Content[0], "")
	if len(noDefault) > 0 {
		t.Errorf("example keys whose comment does not say \"Default:\": %v", noDefault)
	}
}

func TestParseOverDefaults(t *testing.T) {
	cfg, err := Parse([]byte("server:\n  server_name: example.org\nbridges:\n  email:\n    idle_timeout: 90s\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Server.ServerName = "example.org"
	want.Bridges.Email.IdleTimeout = 90 * time.Second
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
}

func TestParseEmptyFileIsDefault(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n"} {
		cfg, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Fatalf("%q: not the defaults", in)
		}
	}
}

func TestParseRefusesUnknownKeysAllAtOnce(t *testing.T) {
	in := "server:\n  server_nmae: x\ndatabase:\n  typ: postgres\nextra: 1\n"
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, k := range []string{"server_nmae", "typ", "extra"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %q: %v", k, err)
		}
	}
}

func TestParseRefusesBadTypes(t *testing.T) {
	for name, in := range map[string]string{
		"duration as number": "appservices:\n  max_retry_interval: 300\n",
		"bad duration":       "bridges:\n  email:\n    idle_timeout: soon\n",
		"bool as string":     "registration:\n  enabled: maybe\n",
		"list for section":   "server: [a, b]\n",
		"not yaml":           "server: {\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); err == nil {
				t.Fatalf("accepted %q", in)
			}
		})
	}
}

func TestValidateReportsEveryBadKey(t *testing.T) {
	cfg := Default()
	cfg.Server.ServerName = "bad name"
	cfg.Server.Listen = "8008"
	cfg.Server.PublicBaseURL = "ftp://x"
	cfg.Server.DataDir = " "
	cfg.Database.Type = "mysql"
	cfg.Database.MaxOpenConns = 0
	cfg.Registration.SharedSecret = "short"
	cfg.Media.MaxUploadBytes = 0
	cfg.Appservices.Directory = filepath.Join(t.TempDir(), "missing")
	cfg.Appservices.MaxRetryInterval = 0
	cfg.Bridges.Email.BotLocalpart = "Email Bot"
	cfg.Bridges.Email.UsernameTemplate = "email_"
	cfg.Bridges.Email.IdleTimeout = time.Second
	cfg.Bridges.Email.MaxAttachmentBytes = -1
	cfg.Logging.Level = "verbose"
	err := cfg.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate() = %v, want *ValidationError", err)
	}
	var got []string
	for _, p := range ve.Problems {
		got = append(got, p.Key)
		if p.Message == "" {
			t.Errorf("%s: empty message", p.Key)
		}
	}
	want := []string{"server.server_name", "server.listen", "server.public_base_url", "server.data_dir",
		"database.type", "database.max_open_conns", "registration.shared_secret", "media.max_upload_bytes",
		"appservices.directory", "appservices.max_retry_interval", "bridges.email.bot_localpart",
		"bridges.email.username_template", "bridges.email.idle_timeout", "bridges.email.max_attachment_bytes",
		"logging.level"}
	if !slices.Equal(got, want) {
		t.Fatalf("problems for %v\nwant %v", got, want)
	}
	for _, k := range want {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("message does not name %s", k)
		}
	}
}

func TestValidateCases(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantKey string // "" = valid
	}{
		{"server name with port", func(c *Config) { c.Server.ServerName = "example.org:8448" }, ""},
		{"server name IPv6", func(c *Config) { c.Server.ServerName = "[::1]:8448" }, ""},
		{"server name empty", func(c *Config) { c.Server.ServerName = "" }, "server.server_name"},
		{"server name with user", func(c *Config) { c.Server.ServerName = "a@b" }, "server.server_name"},
		{"listen all interfaces", func(c *Config) { c.Server.Listen = ":8008" }, ""},
		{"listen host name", func(c *Config) { c.Server.Listen = "example.org:8008" }, "server.listen"},
		{"listen port too big", func(c *Config) { c.Server.Listen = "127.0.0.1:70000" }, "server.listen"},
		{"https base URL with path", func(c *Config) { c.Server.PublicBaseURL = "https://m.example.org/x" }, ""},
		{"base URL with query", func(c *Config) { c.Server.PublicBaseURL = "https://m.example.org/?a=b" }, "server.public_base_url"},
		{"postgres with URI", func(c *Config) {
			c.Database.Type = "postgres"
			c.Database.URI = "postgres://u:p@localhost/db"
		}, ""},
		{"postgres keyword DSN", func(c *Config) {
			c.Database.Type = "postgres"
			c.Database.URI = "host=localhost dbname=db"
		}, ""},
		{"postgres without URI", func(c *Config) { c.Database.Type = "postgres" }, "database.uri"},
		{"strong shared secret", func(c *Config) { c.Registration.SharedSecret = strings.Repeat("s", 16) }, ""},
		{"short shared secret", func(c *Config) { c.Registration.SharedSecret = "complement" }, "registration.shared_secret"},
		{"short shared secret allowed for tests", func(c *Config) {
			c.Registration.SharedSecret = "complement"
			c.Registration.AllowShortSharedSecret = true
		}, ""},
		{"existing appservice dir", func(c *Config) { c.Appservices.Directory = os.TempDir() }, ""},
		{"template without placeholder", func(c *Config) { c.Bridges.Email.UsernameTemplate = "mail" }, "bridges.email.username_template"},
		{"template broken", func(c *Config) { c.Bridges.Email.UsernameTemplate = "x_{{.}}{{" }, "bridges.email.username_template"},
		{"template upper case", func(c *Config) { c.Bridges.Email.UsernameTemplate = "Mail_{{.}}" }, "bridges.email.username_template"},
		{"idle timeout too long", func(c *Config) { c.Bridges.Email.IdleTimeout = time.Hour }, "bridges.email.idle_timeout"},
		{"debug logging", func(c *Config) { c.Logging.Level = "debug" }, ""},
		{"allowed users", func(c *Config) {
			c.Bridges.Email.AllowedUsers = []string{"@alice:example.org", "example.org", "*", "localhost:8448"}
		}, ""},
		{"allowed users glob", func(c *Config) { c.Bridges.Email.AllowedUsers = []string{"@.*:example.org"} }, "bridges.email.allowed_users"},
		{"allowed users junk", func(c *Config) { c.Bridges.Email.AllowedUsers = []string{"alice smith"} }, "bridges.email.allowed_users"},
		{"allowed users bad ID", func(c *Config) { c.Bridges.Email.AllowedUsers = []string{"@alice"} }, "bridges.email.allowed_users"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			tc.mutate(cfg)
			err := cfg.Validate()
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Key != tc.wantKey {
				t.Fatalf("Validate() = %v, want one problem with %s", err, tc.wantKey)
			}
		})
	}
}

func TestWriteExampleAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "passerelle.yaml")
	cfg, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: created=%v err=%v", created, err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatal("fresh config is not the defaults")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600 (it may hold secrets)", st.Mode().Perm())
	}
	// A second start keeps the operator's edits.
	if err := os.WriteFile(path, []byte("logging:\n  level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, created, err = LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	if cfg.Logging.Level != "debug" {
		t.Fatalf("edit lost: level %q", cfg.Logging.Level)
	}
	// An invalid file is refused with the key named.
	if err := os.WriteFile(path, []byte("logging:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "logging.level") {
		t.Fatalf("invalid config: err = %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Example)
	f.Add([]byte("server:\n  server_name: example.org\n"))
	f.Add([]byte("bridges:\n  email:\n    idle_timeout: 90s\n    enabled: false\n"))
	f.Add([]byte("database: {type: postgres, uri: 'postgres://x@y/z'}\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("server: [1]\n"))
	known := map[string]bool{}
	for _, k := range structKeys(reflect.TypeOf(Config{}), "") {
		known[k] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		// Deterministic.
		again, err := Parse(data)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("second parse differs: %v", err)
		}
		// Validation never panics and only ever names real keys.
		verr := cfg.Validate()
		if verr == nil {
			return
		}
		var ve *ValidationError
		if !errors.As(verr, &ve) || len(ve.Problems) == 0 {
			t.Fatalf("Validate returned %T %v", verr, verr)
		}
		for _, p := range ve.Problems {
			if !known[p.Key] {
				t.Fatalf("problem for unknown key %q", p.Key)
			}
		}
	})
}
