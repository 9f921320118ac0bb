package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
)

// Example is the commented example configuration: every key with its meaning and default. It is what
// WriteExample writes on first start, and it parses to exactly Default().
//
//go:embed passerelle.example.yaml
var Example []byte

// Load reads the YAML file at path over Default(): keys the file leaves out keep their defaults. Unknown keys
// are errors (all of them are reported at once), so a typo never silently falls back to a default. Load does
// not validate values; call Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over Default() with the same rules as Load.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return cfg, nil
}

// WriteExample writes Example to path unless a file is already there, creating the directory. It reports
// whether it wrote the file. The file is private to its owner: operators put secrets in it.
func WriteExample(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("stat config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("create config directory: %w", err)
	}
	// O_EXCL: never overwrite a file another process wrote meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("create config: %w", err)
	}
	if _, err := f.Write(Example); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("write config: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write config: %w", err)
	}
	return true, nil
}

// LoadOrCreate writes the example to path if nothing is there yet, then loads and validates it.
// It reports whether the file was created.
func LoadOrCreate(path string) (*Config, bool, error) {
	created, err := WriteExample(path)
	if err != nil {
		return nil, false, err
	}
	cfg, err := Load(path)
	if err != nil {
		return nil, created, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, created, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, created, nil
}

// Problem is one invalid key.
type Problem struct {
	// Key is the dotted YAML path, e.g. "server.listen".
	Key string
	// Message says what is wrong and what is expected.
	Message string
}

// ValidationError lists every invalid key found by Validate.
type ValidationError struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d invalid config value(s):", len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Key, p.Message)
	}
	return b.String()
}

// MinSharedSecretLength is the shortest registration shared secret accepted: the secret lets its holder
// create admin accounts, so a guessable one is refused.
const MinSharedSecretLength = 16

// minIdleTimeout keeps the IMAP watchdog from hammering servers with NOOPs; RFC 9051 asks clients to
// re-issue IDLE at least every 29 minutes, hence the maximum.
const (
	minIdleTimeout = 10 * time.Second
	maxIdleTimeout = 29 * time.Minute
)

var (
	serverNameRE = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$`)
	localpartRE  = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)
	logLevels    = map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true}
)

// Validate checks every value and returns a *ValidationError listing all bad keys at once, or nil.
func (c *Config) Validate() error {
	var ps []Problem
	bad := func(key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
	}

	// server
	if !serverNameRE.MatchString(c.Server.ServerName) {
		bad("server.server_name", "%q is not a host name with an optional port (e.g. \"localhost\" or \"example.org\")",
			c.Server.ServerName)
	}
	if host, port, err := net.SplitHostPort(c.Server.Listen); err != nil {
		bad("server.listen", "%q is not host:port (%v)", c.Server.Listen, err)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("server.listen", "port %q is not a number from 0 to 65535", port)
	} else if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		bad("server.listen", "host %q must be an IP address, \"localhost\" or empty (all interfaces)", host)
	}
	if u, err := url.Parse(c.Server.PublicBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") ||
		u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("server.public_base_url", "%q is not an http(s) URL without query or fragment", c.Server.PublicBaseURL)
	}
	if strings.TrimSpace(c.Server.DataDir) == "" {
		bad("server.data_dir", "must not be empty")
	}

	// database
	switch c.Database.Type {
	case "sqlite":
	case "postgres":
		if u, err := url.Parse(c.Database.URI); c.Database.URI == "" || err != nil ||
			(u.Scheme != "postgres" && u.Scheme != "postgresql" && !strings.Contains(c.Database.URI, "=")) {
			bad("database.uri", "type postgres needs a connection URI such as postgres://user:pass@host/db")
		}
	default:
		bad("database.type", "%q is not \"sqlite\" or \"postgres\"", c.Database.Type)
	}
	if c.Database.MaxOpenConns < 1 {
		bad("database.max_open_conns", "must be at least 1, got %d", c.Database.MaxOpenConns)
	}

	// registration
	if s := c.Registration.SharedSecret; s != "" && len(s) < MinSharedSecretLength && !c.Registration.AllowShortSharedSecret {
		bad("registration.shared_secret", "must be empty (endpoint off) or at least %d characters",
			MinSharedSecretLength)
	}

	// media
	if c.Media.MaxUploadBytes < 1 {
		bad("media.max_upload_bytes", "must be positive, got %d", c.Media.MaxUploadBytes)
	}

	// appservices
	if c.Appservices.Directory != "" {
		if st, err := os.Stat(c.Appservices.Directory); err != nil || !st.IsDir() {
			bad("appservices.directory", "%q is not a readable directory", c.Appservices.Directory)
		}
	}
	if c.Appservices.MaxRetryInterval < time.Second {
		bad("appservices.max_retry_interval", "must be at least 1s, got %s", c.Appservices.MaxRetryInterval)
	}

	// bridges.email
	e := c.Bridges.Email
	if !localpartRE.MatchString(e.BotLocalpart) {
		bad("bridges.email.bot_localpart", "%q is not a valid Matrix localpart (a-z 0-9 . _ = - / +)", e.BotLocalpart)
	}
	if !strings.Contains(e.UsernameTemplate, "{{.}}") {
		bad("bridges.email.username_template", "%q must contain {{.}} (the escaped address)", e.UsernameTemplate)
	} else if tmpl, err := template.New("u").Parse(e.UsernameTemplate); err != nil {
		bad("bridges.email.username_template", "does not parse: %v", err)
	} else {
		var b strings.Builder
		if err := tmpl.Execute(&b, "bob=40example.com"); err != nil || !localpartRE.MatchString(b.String()) {
			bad("bridges.email.username_template", "%q does not produce a valid Matrix localpart", e.UsernameTemplate)
		} else if b.String() == e.BotLocalpart {
			bad("bridges.email.username_template", "ghost names must differ from bot_localpart")
		}
	}
	if e.IdleTimeout < minIdleTimeout || e.IdleTimeout > maxIdleTimeout {
		bad("bridges.email.idle_timeout", "must be between %s and %s, got %s", minIdleTimeout, maxIdleTimeout,
			e.IdleTimeout)
	}
	if e.MaxAttachmentBytes < 1 {
		bad("bridges.email.max_attachment_bytes", "must be positive, got %d", e.MaxAttachmentBytes)
	}
	for _, u := range e.AllowedUsers {
		if msg := checkAllowedUser(u); msg != "" {
			bad("bridges.email.allowed_users", "%q: %s", u, msg)
		}
	}

	// logging
	if !logLevels[c.Logging.Level] {
		bad("logging.level", "%q is not one of trace, debug, info, warn, error", c.Logging.Level)
	}

	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// checkAllowedUser checks one allowed_users entry: "*", a user ID or a server name, as bridgev2 permissions
// match them. Anything else (a glob, say) would silently match nobody, so it is refused. It returns "" if valid.
func checkAllowedUser(entry string) string {
	switch {
	case entry == "*":
		return ""
	case strings.ContainsAny(entry, "*?"):
		return "globs are not supported; list user IDs, server names or \"*\""
	case strings.HasPrefix(entry, "@"):
		local, server, ok := strings.Cut(entry[1:], ":")
		if !ok || local == "" || !serverNameRE.MatchString(server) {
			return "not a user ID like @alice:example.org"
		}
		return ""
	case !serverNameRE.MatchString(entry):
		return "want \"*\", a user ID (@alice:example.org) or a server name (example.org)"
	}
	return ""
}
