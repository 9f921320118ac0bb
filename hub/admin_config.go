package hub

import "github.com/passerelle/passerelle/configs"

// emailAllowedUsers is bridges.email.allowed_users (empty = every local user).
func emailAllowedUsers(cfg configs.EmailBridge) []string { return nil }
