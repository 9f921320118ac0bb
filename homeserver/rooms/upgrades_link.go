package rooms

import "github.com/passerelle/passerelle/homeserver/rooms/upgrades"

var upgradeTable = upgrades.Table
