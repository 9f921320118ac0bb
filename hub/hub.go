// Package hub assembles one Passerelle process: the Matrix homeserver, the durable appservice sender, and the
// in-process bridges (email first), all on one HTTP listener. cmd/passerelle and the end-to-end tests call it.
//
// It is the top of the import graph: it may import homeserver, appservice, registration and bridges; nothing in
// the project imports it except cmd and tests.
package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"

	"github.com/passerelle/passerelle/appservice"
	"github.com/passerelle/passerelle/bridges/email"
	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver"
	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/registration"
)

// Bridge IDs of the built-in bridges (appservice IDs, database names bridge-<id>, mount paths).
const (
	EmailBridgeID = "email"
)

const (
	// readHeaderTimeout stops slow-loris clients from holding connections; /sync long-polls are unaffected
	// because they concern the response, not the request headers.
	readHeaderTimeout = 10 * time.Second
	// defaultReadTimeout bounds reading a whole request, body included, so that a client that sends headers
	// and then trickles (or stalls) its body cannot hold a connection forever. Matrix request bodies are small
	// JSON (a few KiB to 1 MiB); 60 s is ample even on a poor mobile link. Media uploads, which may be large,
	// extend their own deadline (clientapi's upload handler). /sync long-polls are unaffected: net/http lifts
	// the read deadline once a request without a body has been read (TestSlowBodyConnectionClosed checks it).
	defaultReadTimeout = 60 * time.Second
	// defaultIdleTimeout closes keep-alive connections that carry no request for this long. It is longer
	// than a client's usual gap between two /sync long-polls (a few seconds) so that connections are reused,
	// but keeps abandoned ones from piling up.
	defaultIdleTimeout = 120 * time.Second
	// shutdownTimeout bounds the graceful HTTP shutdown; long-polls are cut after it.
	shutdownTimeout = 10 * time.Second
)

// Hub is one running Passerelle: homeserver + appservice sender + bridge host.
type Hub struct {
	cfg       *configs.Config
	log       zerolog.Logger
	hs        *homeserver.Server
	sender    *appservice.Sender
	host      *appservice.Host
	transport *appservice.InProcessTransport
	regs      []*registration.Registration

	mu       sync.Mutex
	listener net.Listener
	ready    chan struct{}

	// Bridge switches, metrics and the "switched off" notices (admin*.go, metrics.go).
	switches *switchStore
	metrics  *metrics
	senderTr *senderTransport
	noticer  *noticer
	// runMu guards runCtx (Serve's context, used to restart the sender) and stopping.
	runMu    sync.Mutex
	runCtx   context.Context
	stopping bool

	// readTimeout and idleTimeout are the http.Server's (defaultReadTimeout, defaultIdleTimeout; tests
	// shorten them).
	readTimeout, idleTimeout time.Duration
}

// New builds everything without starting it: registrations of the in-process bridges (generated once under
// <data_dir>/registrations), the external registrations from appservices.directory, the homeserver, the
// sender and the bridges.
func New(ctx context.Context, cfg *configs.Config, log zerolog.Logger) (*Hub, error) {
	h := &Hub{cfg: cfg, log: log, ready: make(chan struct{}), readTimeout: defaultReadTimeout, idleTimeout: defaultIdleTimeout}
	h.transport = appservice.NewInProcessTransport(nil)

	var regs []*registration.Registration
	if cfg.Appservices.Directory != "" {
		ext, err := registration.LoadDir(cfg.Appservices.Directory)
		if err != nil {
			return nil, fmt.Errorf("load appservice registrations: %w", err)
		}
		regs = append(regs, ext...)
	}
	emailCfg := cfg.Bridges.Email
	var emailReg *registration.Registration
	if emailCfg.Enabled {
		var err error
		emailReg, err = appservice.LoadOrCreateRegistration(cfg.Server.DataDir, EmailBridgeID, emailCfg.BotLocalpart,
			emailCfg.UsernameTemplate, cfg.Server.ServerName)
		if err != nil {
			return nil, fmt.Errorf("email bridge registration: %w", err)
		}
		regs = append(regs, emailReg)
	}
	h.regs = regs

	hs, err := homeserver.New(ctx, cfg, homeserver.Options{
		Appservices: regs,
		ASClient:    h.transport.Client(),
		Log:         log.With().Str("component", "homeserver").Logger(),
	})
	if err != nil {
		return nil, fmt.Errorf("start homeserver: %w", err)
	}
	h.hs = hs
	h.transport.SetHandler(hs.Handler())

	h.switches, err = newSwitchStore(ctx, hs.DB(), log)
	if err != nil {
		hs.Close()
		return nil, err
	}
	disabled, err := h.switches.disabled(ctx)
	if err != nil {
		hs.Close()
		return nil, err
	}
	h.metrics = newMetrics(h)
	// The sender's transport holds back transactions for switched-off bridges and measures the others.
	h.senderTr = &senderTransport{h: h, next: h.transport}
	senderClient := &http.Client{Transport: h.senderTr}
	h.sender, err = appservice.NewSender(ctx, hs.DB(), hs.Rooms(), regs, senderClient, cfg.Appservices,
		log.With().Str("component", "appservice_sender").Logger())
	if err != nil {
		hs.Close()
		return nil, err
	}
	h.host = appservice.NewHost(appservice.HostConfig{
		ServerName: cfg.Server.ServerName,
		Transport:  h.transport,
		Mount:      hs.Handle,
		Log:        log.With().Str("component", "bridge").Logger(),
		LogHook:    h.metrics.errorHook,
	})
	h.mountAdmin()
	h.noticer = newNoticer(h)
	hs.Rooms().Subscribe(h.noticer.observe)
	hs.Rooms().Subscribe(h.countRemote)
	if emailCfg.Enabled {
		conn := email.NewConnector(emailCfg)
		conn.SetDataDir(cfg.Server.DataDir)
		if err := h.addBridge(ctx, EmailBridgeID, conn, emailReg, emailCfg.UsernameTemplate,
			emailAllowedUsers(emailCfg), disabled[EmailBridgeID]); err != nil {
			hs.Close()
			return nil, err
		}
	}
	return h, nil
}

// addBridge opens the bridge's own database and hands it to the host.
func (h *Hub) addBridge(ctx context.Context, bridgeID string, conn bridgev2.NetworkConnector,
	reg *registration.Registration, usernameTemplate string, allowed []string, disabled bool) error {
	db, err := storage.Open(ctx, h.cfg.Database, h.cfg.Server.DataDir, "bridge-"+bridgeID, h.log)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridgeID, err)
	}
	err = h.host.Add(appservice.BridgeSpec{
		ID:               bridgeID,
		Connector:        conn,
		DB:               db,
		Registration:     reg,
		UsernameTemplate: usernameTemplate,
		AllowedUsers:     allowed,
		Disabled:         disabled,
	})
	if err != nil {
		_ = db.Close()
		return err
	}
	return nil
}

// Homeserver returns the homeserver (its services and handler).
func (h *Hub) Homeserver() *homeserver.Server { return h.hs }

// Handler returns the hub's HTTP handler: every homeserver route plus the in-process appservice routers.
func (h *Hub) Handler() http.Handler { return h.hs.Handler() }

// Sender returns the appservice sender (status for admin pages and tests).
func (h *Hub) Sender() *appservice.Sender { return h.sender }

// Bridges returns the bridge host.
func (h *Hub) Bridges() *appservice.Host { return h.host }

// Registrations returns every appservice registration the homeserver knows (files and in-process bridges).
func (h *Hub) Registrations() []*registration.Registration { return h.regs }

// Addr returns the address the hub listens on once Run has opened its listener (nil before).
func (h *Hub) Addr() net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listener == nil {
		return nil
	}
	return h.listener.Addr()
}

// Ready is closed when Run has started the listener, the sender and the bridges.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run listens on cfg.Server.Listen, starts the sender and the bridges, and serves until ctx ends; then it stops
// the sender, the bridges and the listener (in that order) and closes the databases. A bridge that fails to start is logged and reported in the
// host's status; it does not stop the homeserver.
func (h *Hub) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", h.cfg.Server.Listen)
	if err != nil {
		h.Close()
		return fmt.Errorf("listen on %s: %w", h.cfg.Server.Listen, err)
	}
	return h.Serve(ctx, ln)
}

// Serve is Run on an existing listener (tests pass 127.0.0.1:0).
func (h *Hub) Serve(ctx context.Context, ln net.Listener) error {
	h.mu.Lock()
	h.listener = ln
	h.mu.Unlock()
	defer h.hs.Close()

	srv := &http.Server{
		Handler:           h.Handler(),
		ReadHeaderTimeout: min(readHeaderTimeout, h.readTimeout),
		ReadTimeout:       h.readTimeout,
		IdleTimeout:       h.idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	// Waiting /sync long-polls (up to minutes) answer at once when Shutdown starts instead of holding it up.
	srv.RegisterOnShutdown(h.hs.BeginShutdown)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	h.log.Info().Str("address", ln.Addr().String()).Str("server_name", h.cfg.Server.ServerName).Msg("Homeserver listening")

	h.runMu.Lock()
	h.runCtx = ctx
	h.runMu.Unlock()
	go h.noticer.run(ctx)
	if err := h.sender.Start(ctx); err != nil {
		_ = srv.Close()
		h.host.Stop()
		return fmt.Errorf("start appservice sender: %w", err)
	}
	if err := h.host.Start(ctx); err != nil {
		h.log.Err(err).Msg("Some bridges did not start")
	}
	close(h.ready)

	var runErr error
	select {
	case <-ctx.Done():
		h.log.Info().Msg("Shutting down")
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	}
	// Stop pushing first so no transaction is handed to a bridge that is shutting down (an unsent one stays
	// persisted for the next start); bridges then disconnect while they can still reach the homeserver
	// in-process; the listener goes last.
	h.runMu.Lock()
	h.stopping = true
	h.sender.Stop()
	h.runMu.Unlock()
	h.host.Stop()
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = srv.Close()
	}
	h.log.Info().Msg("Stopped")
	return runErr
}

// Close releases what New built when Run is never called.
func (h *Hub) Close() {
	h.host.Stop()
	h.hs.Close()
}
