package email

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/configupgrade"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/database"

	"github.com/passerelle/passerelle/configs"
)

// Connector is the email network connector for bridgev2. One Connector serves every user of the bridge; each
// login gets its own Client.
type Connector struct {
	cfg    configs.EmailBridge
	br     *bridgev2.Bridge
	sealer *Sealer
	store  *Store

	// names remembers the display name each correspondent last used in a From/To/Cc header, so ghosts get
	// named when bridgev2 asks GetUserInfo.
	names sync.Map // lower-case address → display name

	// homeserverMax is the homeserver's upload limit, once bridgev2 has told us (SetMaxFileSize).
	homeserverMax atomic.Int64

	// mailsHandled counts mails handed to bridgev2 (including duplicates it ignored); tests read it.
	mailsHandled atomic.Int64

	// watcher timing; zero means the Watcher defaults. Tests shorten them.
	commandTimeout time.Duration
	maxBackoff     time.Duration
	// checkTimeout bounds each server check of a login; zero means LoginCheckTimeout. Tests shorten it.
	checkTimeout time.Duration
}

var (
	_ bridgev2.NetworkConnector      = (*Connector)(nil)
	_ bridgev2.StoppableNetwork      = (*Connector)(nil)
	_ bridgev2.MaxFileSizeingNetwork = (*Connector)(nil)
)

// NewConnector returns the email connector for the hub's bridge host. Call SetDataDir (or SetSecretKeyFile)
// before the bridge starts so passwords are sealed with the key in the data directory; without it the key is
// ./data/email-secret.key.
func NewConnector(cfg configs.EmailBridge) *Connector {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = configs.Default().Bridges.Email.IdleTimeout
	}
	return &Connector{cfg: cfg, sealer: NewSealer(filepath.Join("data", secretKeyFile))}
}

// SetDataDir puts the password-sealing key at <dir>/email-secret.key (created 0600 on first use).
func (c *Connector) SetDataDir(dir string) { c.SetSecretKeyFile(filepath.Join(dir, secretKeyFile)) }

// SetSecretKeyFile sets the path of the password-sealing key file.
func (c *Connector) SetSecretKeyFile(path string) { c.sealer = NewSealer(path) }

// SetMaxFileSize implements bridgev2.MaxFileSizeingNetwork: attachments larger than the homeserver accepts are
// replaced by a notice instead of failing the whole message.
// bridgev2 calls it from its own goroutine while mailboxes may already be syncing, hence the atomic.
func (c *Connector) SetMaxFileSize(maxSize int64) { c.homeserverMax.Store(maxSize) }

// maxAttachmentBytes is the smaller of the configured limit and the homeserver's upload limit (0 = none known).
func (c *Connector) maxAttachmentBytes() int64 {
	limit, hs := c.cfg.MaxAttachmentBytes, c.homeserverMax.Load()
	if hs > 0 && (limit <= 0 || hs < limit) {
		return hs
	}
	return limit
}

func (c *Connector) loginCheckTimeout() time.Duration {
	if c.checkTimeout > 0 {
		return c.checkTimeout
	}
	return LoginCheckTimeout
}

// Init implements bridgev2.NetworkConnector. It also hides from `help` the bot commands this bridge cannot do.
func (c *Connector) Init(br *bridgev2.Bridge) {
	c.br = br
	if proc, ok := br.Commands.(*commands.Processor); ok {
		hideUnsupportedCommands(proc)
	}
}

// hideUnsupportedCommands re-registers the built-in commands whose NetworkAPI the email Client does not
// implement (search, start-chat, …) so that `help` leaves them out even before the user has logged in (bridgev2
// only checks the NetworkAPI of a logged-in user). Typing one still answers that the bridge does not support it.
func hideUnsupportedCommands(proc *commands.Processor) {
	never := func(bridgev2.NetworkConnector) bool { return false }
	for _, h := range []*commands.FullHandler{
		commands.CommandRegisterPush, commands.CommandImportImagePack, commands.CommandMute, commands.CommandDeleteChat,
		commands.CommandBlockUser, commands.CommandSetProfile, commands.CommandResolveIdentifier,
		commands.CommandStartChat, commands.CommandCreateGroup, commands.CommandSearch,
	} {
		if h.NetworkAPI == nil || h.NetworkAPI(&Client{}) {
			continue
		}
		hidden := *h
		hidden.NetworkConnector = never
		proc.AddHandler(&hidden)
	}
}

// Start implements bridgev2.NetworkConnector: it creates the email tables and makes sure the key file is usable,
// so a broken data directory fails the start rather than the first login.
func (c *Connector) Start(ctx context.Context) error {
	st, err := NewStore(ctx, c.br.DB.Database, c.br.Log)
	if err != nil {
		return err
	}
	c.store = st
	if _, err := c.sealer.load(); err != nil {
		return fmt.Errorf("email bridge secret key: %w", err)
	}
	return nil
}

// Stop implements bridgev2.StoppableNetwork. Clients are disconnected by bridgev2 before this.
func (c *Connector) Stop() {}

// GetName implements bridgev2.NetworkConnector.
func (c *Connector) GetName() bridgev2.BridgeName {
	return bridgev2.BridgeName{
		// bridgev2 greets with "Hello, I'm a <DisplayName> bridge bot.", so the name must not start with a vowel.
		DisplayName:          "Passerelle Email",
		NetworkURL:           "https://datatracker.ietf.org/doc/html/rfc5322",
		NetworkID:            "email",
		BeeperBridgeType:     "github.com/passerelle/passerelle/bridges/email",
		DefaultPort:          29399,
		DefaultCommandPrefix: "!email",
	}
}

// GetDBMetaTypes implements bridgev2.NetworkConnector.
func (c *Connector) GetDBMetaTypes() database.MetaTypes {
	return database.MetaTypes{
		Portal:    func() any { return &PortalMetadata{} },
		UserLogin: func() any { return &UserLoginMetadata{} },
	}
}

// GetCapabilities implements bridgev2.NetworkConnector.
func (c *Connector) GetCapabilities() *bridgev2.NetworkGeneralCapabilities {
	return &bridgev2.NetworkGeneralCapabilities{}
}

// GetConfig implements bridgev2.NetworkConnector. Passerelle does not use mxmain's config files: the connector
// takes configs.EmailBridge in NewConnector, so there is nothing to load here.
func (c *Connector) GetConfig() (string, any, configupgrade.Upgrader) { return "", nil, nil }

// GetBridgeInfoVersion implements bridgev2.NetworkConnector.
func (c *Connector) GetBridgeInfoVersion() (info, capabilities int) { return 1, 1 }

// LoadUserLogin implements bridgev2.NetworkConnector. It does no I/O; the password is unsealed in Connect.
func (c *Connector) LoadUserLogin(_ context.Context, login *bridgev2.UserLogin) error {
	login.Client = newClient(c, login)
	return nil
}

// rememberName records a correspondent's display name for GetUserInfo.
func (c *Connector) rememberName(address, name string) {
	name = strings.TrimSpace(name)
	if name == "" || strings.EqualFold(name, address) {
		return
	}
	c.names.Store(strings.ToLower(address), name)
}

func (c *Connector) nameOf(address string) string {
	if v, ok := c.names.Load(strings.ToLower(address)); ok {
		return v.(string)
	}
	return address
}
