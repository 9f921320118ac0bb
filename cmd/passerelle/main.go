// Command passerelle runs the Passerelle hub (a Matrix homeserver with in-process bridges) and its
// administration subcommands. It is wiring only: flags, config, logging, signals; the work is done by the hub,
// homeserver and registration packages.
//
// Usage:
//
//	passerelle serve [-c FILE]
//	passerelle user create NAME [--password P | --password -] [--admin] [-c FILE]
//	passerelle generate-registration --id ID --url URL --sender-localpart BOT [--user-regex RE] [-o FILE]
//	passerelle bridges list|status NAME|enable NAME|disable NAME [-c FILE] [--url URL] [--token T | --as ADMIN]
//	passerelle version
//
// Nothing imports this package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/configs"
)

// DefaultConfigPath is where serve and user create look for the config, and where serve writes it on first
// start.
const DefaultConfigPath = "./data/passerelle.yaml"

// version is set at build time with -ldflags "-X main.version=..."; otherwise the VCS revision is used.
var version = ""

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext is cancelled by SIGINT (Ctrl-C) or SIGTERM (docker stop, systemd), which makes serve shut down
// cleanly. A second signal after stop() kills the process as usual.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

const usage = `Passerelle: a Matrix homeserver with built-in bridges (email).

Usage:
  passerelle serve [-c FILE]
        Run the server. Writes a commented default config to FILE on first start
        (default ` + DefaultConfigPath + `).
  passerelle user create NAME [--password P | --password -] [--admin] [-c FILE]
        Create an account (NAME is the localpart, e.g. alice for @alice:localhost).
        "--password -" reads the password from the first line of standard input.
  passerelle generate-registration --id ID --url URL --sender-localpart BOT [--user-regex RE] [-o FILE]
        Write an appservice registration (Synapse format) with fresh tokens for an external bridge.
  passerelle bridges list|status NAME|enable NAME|disable NAME [-c FILE] [--url URL] [--token T | --as ADMIN]
        Show or switch the in-process bridges of the running server (admin API). Token from --token or
        $PASSERELLE_ADMIN_TOKEN, or --as ADMIN mints a one-use token for that admin from the database.
  passerelle version
        Print the version.
`

// run executes one command line and returns the process exit status. Signals cancel ctx.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "user":
		if len(args) < 2 || args[1] != "create" {
			fmt.Fprint(stderr, "usage: passerelle user create NAME [--password P] [--admin] [-c FILE]\n")
			return 2
		}
		err = cmdUserCreate(ctx, args[2:], stdin, stdout, stderr)
	case "generate-registration":
		err = cmdGenerateRegistration(args[1:], stdout, stderr)
	case "bridges":
		err = cmdBridges(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "passerelle", versionString())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "passerelle: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "passerelle %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "passerelle %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// parseInterleaved parses flags that may come before, between or after positional arguments (Go's flag
// package stops at the first positional one), returning the positional arguments in order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// versionString is the build's version: the -ldflags value, else the module version or VCS revision.
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "dev-" + rev + modified
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	return "dev"
}

// newLogger builds the root logger from the logging section.
func newLogger(cfg configs.Logging, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil || cfg.Level == "" {
		level = zerolog.InfoLevel
	}
	out := w
	if cfg.Pretty {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// loadConfig loads and validates the config at path (which must exist).
func loadConfig(path string) (*configs.Config, error) {
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// readPassword returns the first line of r without its line ending.
func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}
