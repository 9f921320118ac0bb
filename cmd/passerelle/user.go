package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/homeserver/users"
)

// cmdUserCreate creates an account directly in the homeserver's database (the server may be running: SQLite is
// in WAL mode and PostgreSQL is shared).
func cmdUserCreate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("user create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", DefaultConfigPath, "config file")
	password := fs.String("password", "", `the account's password ("-" reads it from standard input)`)
	admin := fs.Bool("admin", false, "make the account a server administrator")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one NAME, got %d arguments", len(pos))
	}
	pass := *password
	if pass == "-" {
		if pass, err = readPassword(stdin); err != nil {
			return err
		}
	}
	if pass == "" {
		return usagef("--password is required (use --password - to read it from standard input)")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	localpart := pos[0]
	// Accept a full user ID of this server too.
	if strings.HasPrefix(localpart, "@") {
		lp, server, err := id.UserID(localpart).Parse()
		if err != nil {
			return usagef("%q is not a user ID: %v", localpart, err)
		}
		if server != cfg.Server.ServerName {
			return usagef("%s belongs to %s, not to this server (%s)", localpart, server, cfg.Server.ServerName)
		}
		localpart = lp
	}
	// A one-shot command: only problems are worth printing, not migration chatter.
	log := newLogger(cfg.Logging, stderr)
	if log.GetLevel() < zerolog.WarnLevel {
		log = log.Level(zerolog.WarnLevel)
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.Server.DataDir, "homeserver", log)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := users.New(ctx, db, cfg.Server.ServerName, log)
	if err != nil {
		return err
	}
	userID, err := svc.Register(ctx, localpart, pass, users.RegisterOpts{Admin: *admin})
	if err != nil {
		return fmt.Errorf("create %s: %w", localpart, err)
	}
	kind := "user"
	if *admin {
		kind = "admin"
	}
	fmt.Fprintf(stdout, "Created %s %s\n", kind, userID)
	return nil
}
