package hub

import "github.com/passerelle/passerelle/configs"

// emailAllowedUsers is bridges.email.allowed_users; an empty list means every user of server_name (the host
// turns it into bridgev2 permissions and refuses entries bridgev2 could not match).
func emailAllowedUsers(cfg configs.EmailBridge) []string { return cfg.AllowedUsers }
