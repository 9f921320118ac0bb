// Package homeserver assembles Passerelle's Matrix homeserver: storage, the room, user, sync and media services,
// the Client-Server API, the Synapse-compatible admin API, and the HTTP middleware around them (CORS, OPTIONS
// preflight, panic recovery, Matrix-style 404/405 answers).
//
// It imports the homeserver's own packages and registration; it must not import appservice, hub or any bridge
// (bridges reach the homeserver only over the Matrix APIs).
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/admin"
	"github.com/passerelle/passerelle/homeserver/clientapi"
	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/media"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/pushers"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/homeserver/storage"
	hsync "github.com/passerelle/passerelle/homeserver/sync"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/registration"
)

// Options are the homeserver's inputs besides the config.
type Options struct {
	// Appservices are the registered application services (files from the config directory and the hub's
	// in-process bridges).
	Appservices []*registration.Registration
	// ASClient reaches appservices (it may route in-process); nil means a default client.
	ASClient *http.Client
	// Log is the root logger.
	Log zerolog.Logger
	// DB, when set, is used instead of opening <data_dir>/homeserver.db or cfg.Database.URI (tests, the hub).
	DB *dbutil.Database
}

// Server is a running homeserver (without a listener: serve Handler() yourself).
type Server struct {
	cfg     *configs.Config
	db      *dbutil.Database
	ownDB   bool
	rooms   *rooms.Service
	users   *users.Service
	sync    *hsync.Service
	e2ee    *e2ee.Service
	media   *media.Service
	as      *registration.Set
	mux     *http.ServeMux
	handler http.Handler
	log     zerolog.Logger
}

// New opens the database, runs every service's migrations, makes sure each appservice's sender user exists, and
// builds the HTTP routes.
func New(ctx context.Context, cfg *configs.Config, opts Options) (*Server, error) {
	log := opts.Log
	s := &Server{cfg: cfg, db: opts.DB, log: log}
	if s.db == nil {
		db, err := storage.Open(ctx, cfg.Database, cfg.Server.DataDir, "homeserver", log)
		if err != nil {
			return nil, err
		}
		s.db, s.ownDB = db, true
	}
	if err := s.init(ctx, opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) init(ctx context.Context, opts Options) error {
	cfg, log := s.cfg, s.log
	name := cfg.Server.ServerName
	var err error
	if s.users, err = users.New(ctx, s.db, name, log.With().Str("component", "users").Logger()); err != nil {
		return err
	}
	if s.rooms, err = rooms.New(ctx, s.db, name, log.With().Str("component", "rooms").Logger()); err != nil {
		return err
	}
	s.rooms.SetProfileSource(func(ctx context.Context, u id.UserID) (string, string) {
		n, a, _ := s.users.Profile(ctx, u)
		return n, a
	})
	if s.sync, err = hsync.New(ctx, s.db, s.rooms, s.users, log.With().Str("component", "sync").Logger()); err != nil {
		return err
	}
	if s.e2ee, err = e2ee.New(ctx, s.db, name, s.rooms, s.users, s.sync.Notifier(),
		log.With().Str("component", "e2ee").Logger()); err != nil {
		return err
	}
	s.sync.SetE2EE(s.e2ee)
	mediaDir := filepath.Join(cfg.Server.DataDir, "media")
	if s.media, err = media.New(ctx, s.db, mediaDir, name, cfg.Media.MaxUploadBytes, log); err != nil {
		return err
	}
	pusherStore, err := pushers.New(ctx, s.db, log.With().Str("component", "pushers").Logger())
	if err != nil {
		return err
	}
	if s.as, err = registration.NewSet(name, opts.Appservices...); err != nil {
		return fmt.Errorf("appservice registrations: %w", err)
	}
	for _, reg := range s.as.All() {
		if err := s.ensureSender(ctx, reg); err != nil {
			return err
		}
	}
	api := clientapi.New(clientapi.Config{
		ServerName: name, PublicBaseURL: cfg.Server.PublicBaseURL, RegistrationEnabled: cfg.Registration.Enabled,
	}, clientapi.Deps{
		Rooms: s.rooms, Users: s.users, Sync: s.sync, Media: s.media, Appservices: s.as, ASClient: opts.ASClient,
		E2EE: s.e2ee, Pushers: pusherStore,
	})
	s.mux = http.NewServeMux()
	api.Register(s.mux)
	admin.New(s.users, name, cfg.Registration.SharedSecret).Register(s.mux)
	s.handler = middleware(s.mux, log)
	return nil
}

// ensureSender registers an appservice's sender user if it does not exist yet, so that the bot can act at once.
func (s *Server) ensureSender(ctx context.Context, reg *registration.Registration) error {
	if reg.SenderLocalpart == "" {
		return nil
	}
	_, err := s.users.Register(ctx, reg.SenderLocalpart, "", users.RegisterOpts{AppserviceID: reg.ID})
	if err != nil && !errors.Is(err, mxerr.UserInUse("")) {
		return fmt.Errorf("register sender of appservice %s: %w", reg.ID, err)
	}
	return nil
}

// Handler returns the HTTP handler for every homeserver route.
func (s *Server) Handler() http.Handler { return s.handler }

// Handle mounts an extra handler on the homeserver's mux (e.g. the hub's in-process appservice routers). It
// gets the same CORS and recovery middleware.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Rooms returns the room service.
func (s *Server) Rooms() *rooms.Service { return s.rooms }

// Users returns the user service.
func (s *Server) Users() *users.Service { return s.users }

// Sync returns the sync service.
func (s *Server) Sync() *hsync.Service { return s.sync }

// E2EE returns the end-to-end encryption key service.
func (s *Server) E2EE() *e2ee.Service { return s.e2ee }

// Media returns the media service.
func (s *Server) Media() *media.Service { return s.media }

// Appservices returns the appservice registrations in use.
func (s *Server) Appservices() *registration.Set { return s.as }

// DB returns the homeserver database.
func (s *Server) DB() *dbutil.Database { return s.db }

// BeginShutdown makes waiting /sync long-polls answer at once (and new ones not wait). Register it with
// http.Server.RegisterOnShutdown so that Shutdown does not wait for long-polls to time out.
func (s *Server) BeginShutdown() { s.sync.StopWaiting() }

// Close ends long-polls and closes the database if New opened it.
func (s *Server) Close() {
	if s.sync != nil {
		s.sync.StopWaiting()
	}
	if s.ownDB && s.db != nil {
		_ = s.db.Close()
	}
}
