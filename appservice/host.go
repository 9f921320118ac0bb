package appservice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"gopkg.in/yaml.v3"
	mxappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/bridgeconfig"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/registration"
)

// MountPrefix is where the hub mounts an in-process bridge's appservice router: <MountPrefix><id>/.
const MountPrefix = "/_passerelle/appservice/"

// stopTimeout bounds how long one bridge may take to disconnect its logins on shutdown.
const stopTimeout = 5 * time.Second

// HostConfig is what the bridge host needs from the hub.
type HostConfig struct {
	// ServerName is the homeserver's name (the domain of the bridges' ghosts and bots).
	ServerName string
	// Transport carries the bridges' Client-Server API requests; requests for InternalHost must reach the
	// homeserver (an *InProcessTransport does that without TCP).
	Transport http.RoundTripper
	// Mount registers an appservice router on the hub's mux (e.g. (*homeserver.Server).Handle).
	Mount func(pattern string, h http.Handler)
	// Log is the parent logger; each bridge logs with bridge_id set.
	Log zerolog.Logger
	// LogHook, if set, gives a hook added to each bridge's logger (the hub counts error entries with it).
	LogHook func(bridgeID string) zerolog.Hook
}

// BridgeSpec describes one in-process bridge.
type BridgeSpec struct {
	// ID is the bridge ID (also the appservice ID and the mount path segment), e.g. "email".
	ID string
	// Connector is the network side.
	Connector bridgev2.NetworkConnector
	// DB is the bridge's own database (storage.Open(..., "bridge-<id>")); the host's Stop closes it.
	DB *dbutil.Database
	// Registration is the bridge's appservice registration (see LoadOrCreateRegistration); the homeserver must
	// have it in its appservice list.
	Registration *registration.Registration
	// UsernameTemplate names ghost users; {{.}} is the remote user ID (e.g. "email_{{.}}").
	UsernameTemplate string
	// Admins get the bridge's admin permission level; every other user of ServerName gets "user".
	Admins []id.UserID
	// StatusNotices chooses which login state changes the bot reports in the user's management room: "errors"
	// (the default when empty: bad credentials, unknown errors, and a disconnect not resolved after 3 minutes),
	// "all" or "none". Note: mautrix v0.33.0 has a data race (seen with -race) in its delayed-disconnect notice,
	// which only "errors" reaches, when a connector reports TRANSIENT_DISCONNECT.
	StatusNotices string
	// AllowedUsers lists who may use the bridge (bridgev2 permission level "user"): full user IDs, server names
	// (everyone on that server) or "*". Empty means every user of the host's server name.
	AllowedUsers []string
	// Disabled starts the bridge switched off (see Host.SetEnabled): its database and appservice router are up,
	// but its logins are not connected and the hub holds back its transactions.
	Disabled bool
}

// BridgeState is the life-cycle state of one hosted bridge.
type BridgeState string

// Bridge states reported by Host.Status.
const (
	StateStopped  BridgeState = "stopped"
	StateStarting BridgeState = "starting"
	StateRunning  BridgeState = "running"
	StateFailed   BridgeState = "failed"
)

// BridgeStatus is one row of Host.Status.
type BridgeStatus struct {
	ID    string      `json:"id"`
	State BridgeState `json:"state"`
	// Enabled is false while an administrator has switched the bridge off (see Host.SetEnabled).
	Enabled bool   `json:"enabled"`
	Error   string `json:"error,omitempty"`
}

// hosted is one bridge and its state.
type hosted struct {
	spec   BridgeSpec
	cfg    *bridgeconfig.Config
	mx     *matrix.Connector
	bridge *bridgev2.Bridge

	mu    sync.Mutex
	state BridgeState
	err   error
	// enabled is the administrator's switch; on is closed while enabled and replaced by an open channel when
	// the bridge is switched off, so WaitEnabled can wait on it.
	enabled bool
	on      chan struct{}
	// loginsStarted records whether bridgev2's StartLogins ran (it must run once: it also starts the backfill
	// queue); a bridge started while disabled runs it on its first enable.
	loginsStarted bool
	// switchMu serialises SetEnabled calls on this bridge (disconnecting logins can take seconds).
	switchMu sync.Mutex
}

// Host runs mautrix-go bridgev2 bridges in this process without mxmain: it builds each bridge's config in code,
// routes its homeserver traffic through the hub's transport, mounts its appservice router on the hub's mux,
// and starts and stops it. Nothing it does calls os.Exit: start failures come back as errors.
type Host struct {
	cfg     HostConfig
	mu      sync.Mutex
	bridges []*hosted
	// disabled counts switched-off bridges, so AnyDisabled is cheap enough for a per-event check.
	disabled atomic.Int32
}

// NewHost returns an empty host.
func NewHost(cfg HostConfig) *Host {
	return &Host{cfg: cfg}
}

// Add builds a bridge (bridgeconfig, matrix connector, bridgev2.Bridge) and mounts its appservice router at
// <MountPrefix><id>/. The bridge does not run until Start.
func (h *Host) Add(spec BridgeSpec) error {
	if spec.ID == "" || spec.Connector == nil || spec.DB == nil || spec.Registration == nil {
		return errors.New("add bridge: ID, Connector, DB and Registration are required")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bridges {
		if b.spec.ID == spec.ID {
			return fmt.Errorf("add bridge %s: already added", spec.ID)
		}
	}
	cfg, err := BridgeConfig(spec, h.cfg.ServerName)
	if err != nil {
		return fmt.Errorf("add bridge %s: %w", spec.ID, err)
	}
	log := h.cfg.Log.With().Str("bridge_id", spec.ID).Logger()
	if h.cfg.LogHook != nil {
		log = log.Hook(h.cfg.LogHook(spec.ID))
	}
	mx := matrix.NewConnector(cfg)
	// bridgev2 would os.Exit when another instance takes over the websocket; we use no websocket, but make sure.
	mx.OnWebsocketReplaced = func() { log.Error().Msg("Appservice websocket replaced; ignoring (websocket not in use)") }
	br := bridgev2.NewBridge(networkid.BridgeID(spec.ID), spec.DB, log, &cfg.Bridge, mx, spec.Connector, commands.NewProcessor)
	if h.cfg.Transport != nil {
		mx.AS.HTTPClient.Transport = h.cfg.Transport
	}
	if h.cfg.Mount != nil {
		h.cfg.Mount(MountPrefix+spec.ID+"/", http.StripPrefix(strings.TrimSuffix(MountPrefix+spec.ID+"/", "/"), mx.AS.Router))
	}
	b := &hosted{spec: spec, cfg: cfg, mx: mx, bridge: br, state: StateStopped, enabled: !spec.Disabled,
		on: make(chan struct{})}
	if b.enabled {
		close(b.on)
	} else {
		h.disabled.Add(1)
	}
	h.bridges = append(h.bridges, b)
	return nil
}

// Start starts every added bridge in order. A bridge that fails to start is marked failed (see Status) and
// the others still start; the returned error joins the failures.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	bridges := append([]*hosted(nil), h.bridges...)
	h.mu.Unlock()
	var errs []error
	for _, b := range bridges {
		if err := b.start(ctx); err != nil {
			errs = append(errs, fmt.Errorf("start bridge %s: %w", b.spec.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (b *hosted) setState(s BridgeState, err error) {
	b.mu.Lock()
	b.state, b.err = s, err
	b.mu.Unlock()
}

func (b *hosted) start(ctx context.Context) error {
	// A switch during start-up waits for it, so it sees the final state and (dis)connects the logins itself.
	b.switchMu.Lock()
	defer b.switchMu.Unlock()
	b.setState(StateStarting, nil)
	ctx = b.bridge.Log.WithContext(ctx)
	// Same order as mxmain: connectors (DB upgrade, homeserver checks), then existing logins, then post-start.
	// A bridge switched off by an administrator starts without its logins (no network connections) until it is
	// enabled.
	err := b.bridge.StartConnectors(ctx)
	b.mu.Lock()
	startLogins := b.enabled
	b.mu.Unlock()
	if err == nil && startLogins {
		err = b.bridge.StartLogins(ctx)
		if err == nil {
			b.mu.Lock()
			b.loginsStarted = true
			b.mu.Unlock()
		}
	}
	if err != nil {
		var exitErr matrix.ExitError
		if errors.As(err, &exitErr) {
			err = fmt.Errorf("matrix connector refused to start (mautrix exit code %d): %w", exitErr.ExitCode, err)
		}
		b.setState(StateFailed, err)
		return err
	}
	// PostStart gets a private logger copy: mautrix v0.33.0's command processor updates a context logger in place
	// (commands/processor.go handleCommand), and -race caught that write racing with PostStart's database logging
	// through the start context's logger when a command arrived right after start.
	go b.bridge.PostStart(b.bridge.Log.With().Logger().WithContext(ctx))
	b.setState(StateRunning, nil)
	b.bridge.Log.Info().Msg("In-process bridge running")
	return nil
}

// Stop stops every running bridge (newest first) and closes their databases.
func (h *Host) Stop() {
	h.mu.Lock()
	bridges := append([]*hosted(nil), h.bridges...)
	h.mu.Unlock()
	for i := len(bridges) - 1; i >= 0; i-- {
		b := bridges[i]
		b.mu.Lock()
		state := b.state
		b.mu.Unlock()
		if state == StateRunning || state == StateFailed || state == StateStarting {
			// bridgev2's Stop also closes the bridge database.
			b.bridge.StopWithTimeout(stopTimeout)
		} else {
			_ = b.spec.DB.Close()
		}
		b.setState(StateStopped, nil)
	}
}

// Status reports each bridge's state.
func (h *Host) Status() []BridgeStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]BridgeStatus, 0, len(h.bridges))
	for _, b := range h.bridges {
		b.mu.Lock()
		st := BridgeStatus{ID: b.spec.ID, State: b.state, Enabled: b.enabled}
		if b.err != nil {
			st.Error = b.err.Error()
		}
		b.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Bridge returns the bridgev2 bridge with the given ID, or nil.
func (h *Host) Bridge(bridgeID string) *bridgev2.Bridge {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bridges {
		if b.spec.ID == bridgeID {
			return b.bridge
		}
	}
	return nil
}

// BridgeConfig builds the bridgev2 config of an in-process bridge: homeserver = the hub (InternalBaseURL,
// server name), appservice id/tokens/bot from the registration with no HTTP listener of its own, permissions
// "user" for spec.AllowedUsers (default: every local user) and "admin" for spec.Admins, encryption and
// double puppeting off, backfill on,
// provisioning, public and direct media off. Options not set here keep bridgev2's zero value, which is its
// "off" setting.
func BridgeConfig(spec BridgeSpec, serverName string) (*bridgeconfig.Config, error) {
	cfg := &bridgeconfig.Config{}
	if example, data, _ := spec.Connector.GetConfig(); data != nil && example != "" {
		if err := yaml.Unmarshal([]byte(example), data); err != nil {
			return nil, fmt.Errorf("parse network config defaults: %w", err)
		}
	}
	name := spec.Connector.GetName()

	cfg.Bridge.CommandPrefix = name.DefaultCommandPrefix
	if cfg.Bridge.CommandPrefix == "" {
		cfg.Bridge.CommandPrefix = "!" + name.NetworkID
	}
	// One room per remote chat and no extra space per user: fewer rooms for a small homeserver.
	cfg.Bridge.PersonalFilteringSpaces = false
	cfg.Bridge.PrivateChatPortalMeta = true
	// Tell users in their management room when a login breaks, not on every transient state.
	cfg.Bridge.BridgeStatusNotices = "errors"
	switch spec.StatusNotices {
	case "":
	case "errors", "all", "none":
		cfg.Bridge.BridgeStatusNotices = spec.StatusNotices
	default:
		return nil, fmt.Errorf("status notices %q: want errors, all or none", spec.StatusNotices)
	}
	cfg.Bridge.UnknownErrorMaxAutoReconnects = 10
	cfg.Bridge.TagOnlyOnCreate = true
	cfg.Bridge.MuteOnlyOnCreate = true
	// Remote events queued per portal before the network side blocks (bridgev2's usual value).
	cfg.Bridge.PortalEventBuffer = 64
	cfg.Bridge.KickMatrixUsers = true
	cfg.Bridge.PortalCreateFilter.Mode = bridgeconfig.PortalCreateFilterModeDeny
	cfg.Bridge.Relay.Enabled = false

	cfg.Homeserver.RetryLimit = 4
	cfg.Matrix.MessageErrorNotices = true
	cfg.Matrix.SyncDirectChatList = true
	cfg.Matrix.FederateRooms = false
	// Media above this size is uploaded from a temporary file rather than memory.
	cfg.Matrix.UploadFileThreshold = 5 << 20

	cfg.Backfill.MaxInitialMessages = 50
	cfg.Backfill.MaxCatchupMessages = 500
	cfg.Backfill.UnreadHoursThreshold = 720
	cfg.Backfill.Threads.MaxInitialMessages = 50

	reg := spec.Registration

	cfg.Homeserver.Address = InternalBaseURL
	cfg.Homeserver.Domain = serverName
	cfg.Homeserver.Software = bridgeconfig.SoftwareStandard
	cfg.Homeserver.Websocket = false
	cfg.Homeserver.WSProxy = ""
	cfg.Homeserver.StatusEndpoint = ""
	cfg.Homeserver.MessageSendCheckpointEndpoint = ""

	cfg.AppService.ID = reg.ID
	cfg.AppService.Address = reg.URL
	cfg.AppService.PublicAddress = ""
	cfg.AppService.Hostname = ""
	cfg.AppService.Port = 0
	cfg.AppService.NoServer = true
	cfg.AppService.ASToken = reg.AppToken
	cfg.AppService.HSToken = reg.ServerToken
	cfg.AppService.Bot.Username = reg.SenderLocalpart
	cfg.AppService.Bot.Displayname = name.DisplayName + " bridge bot"
	cfg.AppService.EphemeralEvents = false
	cfg.AppService.AsyncTransactions = false
	if spec.UsernameTemplate != "" {
		cfg.AppService.UsernameTemplate = spec.UsernameTemplate
	}
	if !strings.Contains(cfg.AppService.UsernameTemplate, "{{.}}") {
		return nil, fmt.Errorf("username template %q lacks {{.}}", cfg.AppService.UsernameTemplate)
	}

	perms := bridgeconfig.PermissionConfig{}
	if len(spec.AllowedUsers) == 0 {
		perms[serverName] = ptr(bridgeconfig.PermissionLevelUser)
	}
	for _, u := range spec.AllowedUsers {
		if err := ValidAllowedUser(u); err != nil {
			return nil, err
		}
		perms[u] = ptr(bridgeconfig.PermissionLevelUser)
	}
	for _, a := range spec.Admins {
		perms[string(a)] = ptr(bridgeconfig.PermissionLevelAdmin)
	}
	cfg.Bridge.Permissions = perms

	cfg.Encryption.Allow = false
	cfg.Encryption.Default = false
	cfg.Encryption.Require = false
	cfg.Encryption.Appservice = false
	cfg.Encryption.MSC4190 = false
	cfg.DoublePuppet = bridgeconfig.DoublePuppetConfig{}
	cfg.Backfill.Enabled = true
	cfg.Bridge.Backfill = cfg.Backfill
	cfg.Provisioning.SharedSecret = "disable"
	cfg.Provisioning.AllowMatrixAuth = false
	cfg.PublicMedia.Enabled = false
	cfg.DirectMedia.Enabled = false
	cfg.Analytics = bridgeconfig.AnalyticsConfig{}
	return cfg, nil
}

func ptr[T any](v T) *T { return &v }

// GhostRegex returns the full-match regex of the ghost users a username template produces on serverName, e.g.
// "email_{{.}}" on "localhost" gives `@email_.+:localhost`.
func GhostRegex(usernameTemplate, serverName string) (string, error) {
	before, after, ok := strings.Cut(usernameTemplate, "{{.}}")
	if !ok {
		return "", fmt.Errorf("username template %q lacks {{.}}", usernameTemplate)
	}
	return "@" + regexp.QuoteMeta(before) + ".+" + regexp.QuoteMeta(after) + ":" + regexp.QuoteMeta(serverName), nil
}

// LoadOrCreateRegistration returns the registration of the in-process bridge bridgeID, stored at
// <dataDir>/registrations/<bridgeID>.yaml: generated with fresh tokens on first start, and on later starts
// loaded with its tokens kept while the URL, sender and namespaces are brought in line with the current config
// (e.g. a changed server name or username template). The file is rewritten only when something changed.
func LoadOrCreateRegistration(dataDir, bridgeID, botLocalpart, usernameTemplate, serverName string) (*registration.Registration, error) {
	path := filepath.Join(dataDir, "registrations", bridgeID+".yaml")
	ghosts, err := GhostRegex(usernameTemplate, serverName)
	if err != nil {
		return nil, err
	}
	url := InternalBaseURL + MountPrefix + bridgeID
	want := mxappservice.Namespaces{UserIDs: mxappservice.NamespaceList{
		{Regex: "@" + regexp.QuoteMeta(botLocalpart) + ":" + regexp.QuoteMeta(serverName), Exclusive: true},
		{Regex: ghosts, Exclusive: true},
	}}

	reg, err := registration.Load(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		reg = registration.Generate(bridgeID, url, botLocalpart, "")
	case err != nil:
		return nil, err
	}
	before, err := reg.Marshal()
	if err != nil {
		return nil, err
	}
	reg.ID, reg.URL, reg.SenderLocalpart, reg.Namespaces = bridgeID, url, botLocalpart, want
	f := false
	reg.RateLimited = &f
	if err := reg.Validate(); err != nil {
		return nil, err
	}
	after, err := reg.Marshal()
	if err != nil {
		return nil, err
	}
	if string(before) != string(after) {
		if err := reg.Save(path); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// ValidAllowedUser checks one entry of BridgeSpec.AllowedUsers: "*", a user ID (@local:server) or a server name.
// bridgev2 permissions match exactly these three forms; anything else (e.g. a glob) would silently match nobody.
func ValidAllowedUser(entry string) error {
	switch {
	case entry == "*":
		return nil
	case strings.IndexFunc(entry, func(r rune) bool { return r <= ' ' || r == 0x7f || unicode.IsSpace(r) }) >= 0:
		return fmt.Errorf("allowed user %q: contains spaces or control characters", entry)
	case strings.HasPrefix(entry, "@"):
		if strings.ContainsAny(entry, "*?") {
			return fmt.Errorf("allowed user %q: globs are not supported; list user IDs or server names", entry)
		}
		if _, _, err := id.UserID(entry).ParseAndValidateRelaxed(); err != nil {
			return fmt.Errorf("allowed user %q: %w", entry, err)
		}
		return nil
	case !validServerName(entry):
		return fmt.Errorf("allowed user %q: want \"*\", a user ID (@alice:example.org) or a server name", entry)
	}
	return nil
}

// validServerName checks the spec's server name grammar: a DNS name or IPv4 address ([A-Za-z0-9.-]), or an IPv6
// literal in brackets, with an optional :port.
func validServerName(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[1:end], s[end+1:]
		if host == "" || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i:]
		}
		if host == "" || len(host) > 255 ||
			strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
			return false
		}
	}
	if port != "" {
		digits := strings.TrimPrefix(port, ":")
		if digits == port || digits == "" || len(digits) > 5 || strings.Trim(digits, "0123456789") != "" {
			return false
		}
	}
	return true
}

func (h *Host) find(bridgeID string) *hosted {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bridges {
		if b.spec.ID == bridgeID {
			return b
		}
	}
	return nil
}

// ErrUnknownBridge is returned by SetEnabled, WaitEnabled and Counts for a bridge ID the host does not have.
var ErrUnknownBridge = errors.New("unknown bridge")

// SetEnabled switches a bridge on or off at runtime, without a restart and without losing anything:
//   - off: every login's network client is disconnected (no remote events come in). The bridge's database and
//     appservice router stay up; the caller (the hub) holds back the bridge's transactions with WaitEnabled,
//     so Matrix events stay queued in the appservice stream.
//   - on: the logins connect again (or start for the first time if the bridge started disabled), then
//     WaitEnabled waiters are released and the queued transactions flow again.
//
// It blocks while clients disconnect (bounded by the clients' own timeouts). Switching to the current state
// does nothing. The switch is not persisted here: the hub stores it and passes BridgeSpec.Disabled on start.
// Reconnecting relies on the connector's NetworkAPI supporting Connect after Disconnect (the email bridge does).
func (h *Host) SetEnabled(ctx context.Context, bridgeID string, enabled bool) error {
	b := h.find(bridgeID)
	if b == nil {
		return fmt.Errorf("%w %q", ErrUnknownBridge, bridgeID)
	}
	b.switchMu.Lock()
	defer b.switchMu.Unlock()
	b.mu.Lock()
	if b.enabled == enabled {
		b.mu.Unlock()
		return nil
	}
	running := b.state == StateRunning
	if !enabled {
		b.enabled = false
		b.on = make(chan struct{})
		h.disabled.Add(1)
		started := b.loginsStarted
		b.mu.Unlock()
		if running && started {
			// In parallel, as bridgev2's own stop does: each client may wait for its connection to close.
			var wg sync.WaitGroup
			for _, login := range b.bridge.GetAllCachedUserLogins() {
				wg.Go(login.Client.Disconnect)
			}
			wg.Wait()
		}
		b.bridge.Log.Info().Msg("Bridge disabled by an administrator")
		return nil
	}
	started := b.loginsStarted
	b.mu.Unlock()
	if running {
		bctx := b.bridge.Log.WithContext(b.bridge.BackgroundCtx)
		if started {
			for _, login := range b.bridge.GetAllCachedUserLogins() {
				login.Client.Connect(login.Log.WithContext(bctx))
			}
		} else {
			if err := b.bridge.StartLogins(bctx); err != nil {
				return fmt.Errorf("enable bridge %s: start logins: %w", bridgeID, err)
			}
			b.mu.Lock()
			b.loginsStarted = true
			b.mu.Unlock()
		}
	}
	b.mu.Lock()
	b.enabled = true
	close(b.on)
	h.disabled.Add(-1)
	b.mu.Unlock()
	b.bridge.Log.Info().Msg("Bridge enabled by an administrator")
	return nil
}

// AnyDisabled reports whether some bridge is switched off (no locks: cheap enough to ask for every event).
func (h *Host) AnyDisabled() bool { return h.disabled.Load() > 0 }

// Enabled reports whether the bridge is switched on; ok is false for an unknown bridge ID.
func (h *Host) Enabled(bridgeID string) (enabled, ok bool) {
	b := h.find(bridgeID)
	if b == nil {
		return false, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.enabled, true
}

// WaitEnabled returns nil at once when the bridge is enabled (or unknown to the host), else blocks until an
// administrator enables it or ctx ends (then ctx's error).
func (h *Host) WaitEnabled(ctx context.Context, bridgeID string) error {
	b := h.find(bridgeID)
	if b == nil {
		return nil
	}
	b.mu.Lock()
	on := b.on
	b.mu.Unlock()
	select {
	case <-on:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Counts returns how many logins and how many portal rooms (portals with a Matrix room) the bridge has, read
// from its database.
func (h *Host) Counts(ctx context.Context, bridgeID string) (logins, portals int, err error) {
	b := h.find(bridgeID)
	if b == nil {
		return 0, 0, fmt.Errorf("%w %q", ErrUnknownBridge, bridgeID)
	}
	db := b.bridge.DB.Database
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM user_login WHERE bridge_id = $1`, bridgeID).Scan(&logins); err != nil {
		return 0, 0, fmt.Errorf("count logins of bridge %s: %w", bridgeID, err)
	}
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM portal WHERE bridge_id = $1 AND mxid IS NOT NULL`, bridgeID).
		Scan(&portals); err != nil {
		return 0, 0, fmt.Errorf("count portals of bridge %s: %w", bridgeID, err)
	}
	return logins, portals, nil
}

// IDs returns the IDs of the added bridges in the order they were added.
func (h *Host) IDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.bridges))
	for _, b := range h.bridges {
		out = append(out, b.spec.ID)
	}
	return out
}

// RegistrationOf returns the registration of the bridge with the given ID, or nil.
func (h *Host) RegistrationOf(bridgeID string) *registration.Registration {
	if b := h.find(bridgeID); b != nil {
		return b.spec.Registration
	}
	return nil
}
