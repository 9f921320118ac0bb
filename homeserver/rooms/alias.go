package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// validAliasLocalpart refuses what would break the alias grammar: empty, ':' and whitespace or control
// characters, and aliases longer than the spec's 255 bytes.
func (s *Service) aliasFor(localpart string) (id.RoomAlias, error) {
	if localpart == "" {
		return "", mxerr.InvalidParam("room alias name is empty")
	}
	if strings.ContainsAny(localpart, ": \t\r\n#") {
		return "", mxerr.InvalidParam("room alias name may not contain ':', '#' or whitespace")
	}
	alias := id.NewRoomAlias(localpart, s.serverName)
	if len(alias) > 255 {
		return "", mxerr.InvalidParam("room alias is longer than 255 bytes")
	}
	return alias, nil
}

func (s *Service) checkLocalAlias(alias id.RoomAlias) error {
	str := string(alias)
	colon := strings.IndexByte(str, ':')
	if len(str) < 3 || str[0] != '#' || colon < 2 || len(str) > 255 {
		return mxerr.InvalidParam("invalid room alias %q", alias)
	}
	if str[colon+1:] != s.serverName {
		return mxerr.InvalidParam("room alias %s is not on this server", alias)
	}
	if strings.ContainsAny(str[1:colon], " \t\r\n") {
		return mxerr.InvalidParam("room alias may not contain whitespace")
	}
	return nil
}

// SetAlias points a local alias at a room. An alias in use is mxerr.RoomInUse ("M_ROOM_IN_USE" is what
// Synapse answers too); an unknown room is mxerr.NotFound.
func (s *Service) SetAlias(ctx context.Context, alias id.RoomAlias, roomID id.RoomID, creator id.UserID) error {
	if err := s.checkLocalAlias(alias); err != nil {
		return err
	}
	if _, err := s.loadRoom(ctx, roomID); err != nil {
		return err
	}
	return s.insertAlias(ctx, alias, roomID, creator)
}

func (s *Service) insertAlias(ctx context.Context, alias id.RoomAlias, roomID id.RoomID, creator id.UserID) error {
	res, err := s.db.Exec(ctx, `INSERT INTO rooms_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
		ON CONFLICT (alias) DO NOTHING`, alias, roomID, creator)
	if err != nil {
		return fmt.Errorf("create alias %s: %w", alias, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.RoomInUse("room alias %s is already in use", alias)
	}
	return nil
}

// ResolveAlias returns the room a local alias points to, or mxerr.NotFound.
func (s *Service) ResolveAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	var roomID id.RoomID
	err := s.db.QueryRow(ctx, `SELECT room_id FROM rooms_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", mxerr.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return "", fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	return roomID, nil
}

// AliasCreator returns who created an alias (for the HTTP layer's delete permission check), or mxerr.NotFound.
func (s *Service) AliasCreator(ctx context.Context, alias id.RoomAlias) (id.UserID, error) {
	var creator id.UserID
	err := s.db.QueryRow(ctx, `SELECT creator FROM rooms_aliases WHERE alias = $1`, alias).Scan(&creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", mxerr.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return "", fmt.Errorf("load alias %s: %w", alias, err)
	}
	return creator, nil
}

// DeleteAlias removes a local alias, or returns mxerr.NotFound. Permission checks (creator, room power
// level, admin) are the caller's.
func (s *Service) DeleteAlias(ctx context.Context, alias id.RoomAlias) error {
	res, err := s.db.Exec(ctx, `DELETE FROM rooms_aliases WHERE alias = $1`, alias)
	if err != nil {
		return fmt.Errorf("delete alias %s: %w", alias, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("room alias %s not found", alias)
	}
	return nil
}

// Aliases lists the local aliases of a room.
func (s *Service) Aliases(ctx context.Context, roomID id.RoomID) ([]id.RoomAlias, error) {
	rows, err := s.db.Query(ctx, `SELECT alias FROM rooms_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("list aliases of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []id.RoomAlias
	for rows.Next() {
		var a id.RoomAlias
		if err = rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("list aliases of %s: %w", roomID, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Visibility returns the room directory visibility ("public" or "private"), or mxerr.NotFound.
func (s *Service) Visibility(ctx context.Context, roomID id.RoomID) (string, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	return r.visibility, nil
}

// SetVisibility sets the room directory visibility ("public" or "private").
func (s *Service) SetVisibility(ctx context.Context, roomID id.RoomID, visibility string) error {
	if visibility != "public" && visibility != "private" {
		return mxerr.InvalidParam("visibility must be public or private")
	}
	res, err := s.db.Exec(ctx, `UPDATE rooms_rooms SET visibility = $2 WHERE room_id = $1`, roomID, visibility)
	if err != nil {
		return fmt.Errorf("set visibility of %s: %w", roomID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("room %s not found", roomID)
	}
	return nil
}

// PublicRooms lists the rooms published in the directory.
func (s *Service) PublicRooms(ctx context.Context) ([]id.RoomID, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM rooms_rooms WHERE visibility = 'public' ORDER BY created_ts`)
	if err != nil {
		return nil, fmt.Errorf("list public rooms: %w", err)
	}
	defer rows.Close()
	var out []id.RoomID
	for rows.Next() {
		var r id.RoomID
		if err = rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("list public rooms: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// errBadAlias is the spec's answer to an m.room.canonical_alias naming an alias that does not point to the room.
func errBadAlias(format string, a ...any) error {
	return mxerr.New(http.StatusBadRequest, "M_BAD_ALIAS", format, a...)
}

// checkCanonicalAlias enforces the spec's rule for m.room.canonical_alias: alias and every alt_aliases entry
// must be valid aliases that point to this room. Aliases of other servers cannot be checked by a server that
// does not federate, so they are refused too.
func (s *Service) checkCanonicalAlias(ctx context.Context, roomID id.RoomID, content map[string]any) error {
	var aliases []any
	if a, has := content["alias"]; has && a != nil {
		aliases = append(aliases, a)
	}
	if alt, has := content["alt_aliases"]; has && alt != nil {
		list, ok := alt.([]any)
		if !ok {
			return mxerr.InvalidParam("alt_aliases must be a list")
		}
		aliases = append(aliases, list...)
	}
	for _, a := range aliases {
		str, ok := a.(string)
		if !ok {
			return mxerr.InvalidParam("room aliases must be strings")
		}
		alias := id.RoomAlias(str)
		if err := s.checkLocalAlias(alias); err != nil {
			// A malformed alias is a bad parameter; M_BAD_ALIAS is for a well-formed alias that is
			// foreign or does not point to this room.
			if colon := strings.IndexByte(str, ':'); len(str) < 3 || str[0] != '#' || colon < 2 {
				return err
			}
			return errBadAlias("%s is not a valid local room alias", alias)
		}
		target, err := s.ResolveAlias(ctx, alias)
		if errors.Is(err, mxerr.NotFound("")) || (err == nil && target != roomID) {
			return errBadAlias("room alias %s does not point to this room", alias)
		} else if err != nil {
			return err
		}
	}
	return nil
}
