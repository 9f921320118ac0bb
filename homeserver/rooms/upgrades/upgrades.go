// Package upgrades holds the rooms service's embedded SQL migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var fs embed.FS

// Table is the rooms migration table, run against the "rooms_version" version table.
var Table = dbutil.BuildUpgradeTable().WithFS(fs).Finish()
