//go:build tools

// Package deps pins the modules the project builds on until the code that uses them lands.
package deps

import (
	_ "github.com/compose-spec/compose-go/v2/loader"
	_ "github.com/emersion/go-imap/v2/imapclient"
	_ "github.com/emersion/go-smtp"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/jhillyerd/enmime/v2"
	_ "github.com/mattn/go-sqlite3"
	_ "github.com/microcosm-cc/bluemonday"
	_ "github.com/rs/zerolog"
	_ "go.mau.fi/util/dbutil"
	_ "gopkg.in/yaml.v3"
	_ "maunium.net/go/mautrix/bridgev2/matrix"
)
