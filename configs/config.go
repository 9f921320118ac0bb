// Package configs holds Passerelle's configuration: one struct per section, the defaults, loading and
// validation, and the commented example written to the data directory on first start.
//
// It is a leaf package: it imports nothing from the project, so every component can take its own section.
package configs

import "time"

// Config is the whole passerelle.yaml.
type Config struct {
	Server       Server       `yaml:"server"`
	Database     Database     `yaml:"database"`
	Registration Registration `yaml:"registration"`
	Media        Media        `yaml:"media"`
	Appservices  Appservices  `yaml:"appservices"`
	Bridges      Bridges      `yaml:"bridges"`
	Logging      Logging      `yaml:"logging"`
}

// Server is the homeserver's identity and listener.
type Server struct {
	// ServerName is the part after the colon in user and room IDs (default "localhost").
	ServerName string `yaml:"server_name"`
	// Listen is the address the Client-Server API listens on (default "127.0.0.1:8008").
	Listen string `yaml:"listen"`
	// PublicBaseURL is the URL clients use to reach the hub (default "http://127.0.0.1:8008").
	PublicBaseURL string `yaml:"public_base_url"`
	// DataDir holds the SQLite files, media, keys and the config itself (default "./data").
	DataDir string `yaml:"data_dir"`
}

// Database selects the storage engine.
type Database struct {
	// Type is "sqlite" (default; one file per component under data_dir) or "postgres".
	Type string `yaml:"type"`
	// URI is the PostgreSQL connection string when type is "postgres" (ignored for sqlite).
	URI string `yaml:"uri"`
	// MaxOpenConns bounds the pool (default 20 for postgres; sqlite uses its own writer limits).
	MaxOpenConns int `yaml:"max_open_conns"`
}

// Registration controls who may create accounts.
type Registration struct {
	// Enabled opens POST /register to anyone (default false: accounts come from the CLI or the admin API).
	Enabled bool `yaml:"enabled"`
	// SharedSecret enables the Synapse-compatible /_synapse/admin/v1/register endpoint when non-empty.
	SharedSecret string `yaml:"shared_secret"`
	// AllowShortSharedSecret accepts a shared secret shorter than MinSharedSecretLength. For test rigs only
	// (Complement hard-codes a 10-character secret); never set it on a real server (default false).
	AllowShortSharedSecret bool `yaml:"allow_short_shared_secret"`
}

// Media configures the content repository.
type Media struct {
	// MaxUploadBytes is the largest upload accepted (default 50 MiB).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
}

// Appservices configures external application services.
type Appservices struct {
	// Directory is scanned at start for registration YAML files (default "" = none).
	Directory string `yaml:"directory"`
	// MaxRetryInterval caps the backoff between transaction retries (default 5m).
	MaxRetryInterval time.Duration `yaml:"max_retry_interval"`
}

// Bridges configures the in-process bridges.
type Bridges struct {
	Email EmailBridge `yaml:"email"`
}

// EmailBridge configures the mailbox bridge.
type EmailBridge struct {
	// Enabled starts the bridge with the hub (default true).
	Enabled bool `yaml:"enabled"`
	// BotLocalpart is the bot users talk to, @email:server_name by default.
	BotLocalpart string `yaml:"bot_localpart"`
	// UsernameTemplate names ghost users; {{.}} is the escaped address (default "email_{{.}}").
	UsernameTemplate string `yaml:"username_template"`
	// IdleTimeout is how long an IMAP IDLE may stay silent before the watchdog ends it with a NOOP (default 5m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxAttachmentBytes is the largest attachment bridged; larger ones are replaced by a notice (default 25 MiB).
	MaxAttachmentBytes int64 `yaml:"max_attachment_bytes"`
	// AllowInsecure permits plaintext IMAP/SMTP connections without TLS (default false; tests and local servers set it).
	AllowInsecure bool `yaml:"allow_insecure"`
	// AllowedUsers lists who may use the bridge: Matrix user IDs (@alice:example.org), server names
	// (example.org = everyone there) or "*"; empty means every user of server_name (default: empty).
	AllowedUsers []string `yaml:"allowed_users"`
}

// Logging configures zerolog output.
type Logging struct {
	// Level is one of trace, debug, info, warn, error (default info).
	Level string `yaml:"level"`
	// Pretty prints human-readable lines instead of JSON (default true).
	Pretty bool `yaml:"pretty"`
}

// Default returns the configuration used for every key the file leaves out.
func Default() *Config {
	return &Config{
		Server: Server{
			ServerName:    "localhost",
			Listen:        "127.0.0.1:8008",
			PublicBaseURL: "http://127.0.0.1:8008",
			DataDir:       "./data",
		},
		Database:     Database{Type: "sqlite", MaxOpenConns: 20},
		Registration: Registration{},
		Media:        Media{MaxUploadBytes: 50 << 20},
		Appservices:  Appservices{MaxRetryInterval: 5 * time.Minute},
		Bridges: Bridges{Email: EmailBridge{
			Enabled:            true,
			BotLocalpart:       "email",
			UsernameTemplate:   "email_{{.}}",
			IdleTimeout:        5 * time.Minute,
			MaxAttachmentBytes: 25 << 20,
			AllowedUsers:       []string{},
		}},
		Logging: Logging{Level: "info", Pretty: true},
	}
}
