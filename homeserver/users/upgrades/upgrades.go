// Package upgrades holds the users service's embedded SQL migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var fs embed.FS

// Table is the users migration table, run against the "users_version" version table.
var Table = dbutil.BuildUpgradeTable().WithFS(fs).Finish()
