package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/hub"
)

// cmdServe runs the hub until ctx ends (SIGINT/SIGTERM), writing the default config on first start.
func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", DefaultConfigPath, "config file (written with defaults if missing)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	cfg, created, err := configs.LoadOrCreate(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Logging, stderr)
	if created {
		abs, _ := filepath.Abs(*path)
		log.Info().Str("path", abs).Msg("Wrote the default config; edit it and restart to change settings")
	}
	log.Info().Str("version", versionString()).Str("server_name", cfg.Server.ServerName).
		Str("listen", cfg.Server.Listen).Str("database", cfg.Database.Type).Str("data_dir", cfg.Server.DataDir).
		Msg("Starting Passerelle")
	h, err := hub.New(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if err := h.Run(ctx); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}
