// Package upgrades holds the e2ee service's embedded SQL migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var fs embed.FS

// Table is the e2ee migration table, run against the "e2ee_version" version table.
var Table = dbutil.BuildUpgradeTable().WithFS(fs).Finish()
