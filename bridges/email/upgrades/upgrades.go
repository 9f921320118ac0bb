// Package upgrades holds the email bridge's own SQL migrations (tables prefixed email_, version table
// email_version), separate from bridgev2's so the two never share a migration file.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the email bridge's migration set.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
