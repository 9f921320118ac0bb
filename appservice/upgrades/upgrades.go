// Package upgrades holds the appservice sender's embedded SQL migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var fs embed.FS

// Table is the appservice sender's migration table, run against the "appservice_version" version table.
var Table = dbutil.BuildUpgradeTable().WithFS(fs).Finish()
