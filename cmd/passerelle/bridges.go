package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/storage"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/hub"
)

// AdminTokenEnv names the environment variable the bridges command reads an admin access token from.
const AdminTokenEnv = "PASSERELLE_ADMIN_TOKEN"

// bridgesTimeout bounds one admin API call (switching off waits for the bridge's connections to close).
const bridgesTimeout = 60 * time.Second

const bridgesUsage = `usage: passerelle bridges list | status NAME | enable NAME | disable NAME
         [-c FILE] [--url URL] [--token TOKEN | --as ADMIN]
Talks to the running server's admin API. Authentication, first found:
  --token TOKEN or $` + AdminTokenEnv + `   a server admin's access token;
  --as ADMIN   (localpart or user ID of a server admin) mints a one-use token in the
               database named by the config and deletes it afterwards.
The server address is --url, else http://<server.listen> from the config.
`

// cmdBridges lists, shows, enables or disables the running hub's in-process bridges through its admin API.
func cmdBridges(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bridges", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, bridgesUsage) }
	path := fs.String("c", DefaultConfigPath, "config file")
	baseURL := fs.String("url", "", "base URL of the running server (default: from server.listen)")
	token := fs.String("token", "", "a server admin's access token (default: $"+AdminTokenEnv+")")
	as := fs.String("as", "", "mint a one-use token for this server admin from the database")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: list, status NAME, enable NAME or disable NAME")
	}
	var method, apiPath string
	switch sub := pos[0]; {
	case sub == "list" && len(pos) == 1:
		method, apiPath = http.MethodGet, hub.BridgesPath
	case sub == "status" && len(pos) == 2:
		method, apiPath = http.MethodGet, hub.BridgesPath+"/status/"+pos[1]
	case (sub == "enable" || sub == "disable") && len(pos) == 2:
		method, apiPath = http.MethodPost, hub.BridgesPath+"/"+sub+"/"+pos[1]
	default:
		return usagef("unknown or incomplete subcommand %q (want list, status NAME, enable NAME or disable NAME)",
			strings.Join(pos, " "))
	}
	tok := *token
	if tok == "" {
		tok = os.Getenv(AdminTokenEnv)
	}
	if tok != "" && *as != "" {
		return usagef("give either a token (--token or $%s) or --as, not both", AdminTokenEnv)
	}
	url := strings.TrimRight(*baseURL, "/")
	if url == "" || tok == "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		if url == "" {
			url = "http://" + dialable(cfg.Server.Listen)
		}
		if tok == "" {
			if *as == "" {
				return usagef("no admin token: give --token, set $%s, or use --as ADMIN", AdminTokenEnv)
			}
			log := newLogger(cfg.Logging, stderr)
			if log.GetLevel() < zerolog.WarnLevel {
				log = log.Level(zerolog.WarnLevel)
			}
			db, err := storage.Open(ctx, cfg.Database, cfg.Server.DataDir, "homeserver", log)
			if err != nil {
				return err
			}
			defer db.Close()
			svc, err := users.New(ctx, db, cfg.Server.ServerName, log)
			if err != nil {
				return err
			}
			userID := id.UserID(*as)
			if !strings.HasPrefix(*as, "@") {
				userID = svc.UserID(*as)
			}
			admin, err := svc.IsAdmin(ctx, userID)
			if err != nil {
				return fmt.Errorf("check %s: %w", userID, err)
			}
			if !admin {
				return fmt.Errorf("%s is not a server admin", userID)
			}
			deviceID, minted, err := svc.NewDevice(ctx, userID, "", "passerelle bridges (one-use)")
			if err != nil {
				return fmt.Errorf("mint a token for %s: %w", userID, err)
			}
			// The token lives only for this command. It is logged out through the server, which also drops it
			// from the server's token cache (deleting the device row alone would leave the cached token
			// valid in the running process); the database delete is the fallback when the server is away.
			defer func() {
				dctx := context.WithoutCancel(ctx)
				if _, err := adminRequest(dctx, http.MethodPost, url+"/_matrix/client/v3/logout", minted); err == nil {
					return
				}
				if err := svc.DeleteDevice(dctx, userID, deviceID); err != nil {
					fmt.Fprintf(stderr, "passerelle bridges: could not delete the one-use device %s: %v\n", deviceID, err)
				}
			}()
			tok = minted
		}
	}
	body, err := adminRequest(ctx, method, url+apiPath, tok)
	if err != nil {
		return err
	}
	if pos[0] == "list" {
		var list hub.BridgeList
		if err := json.Unmarshal(body, &list); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		printBridgeTable(stdout, list.Bridges)
		return nil
	}
	var info hub.BridgeInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	printBridge(stdout, &info)
	return nil
}

// dialable turns a listen address into one a client can dial (a wildcard host becomes loopback).
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// adminRequest makes one call and returns the body of a 200 answer; a Matrix error becomes "M_CODE: message".
func adminRequest(ctx context.Context, method, url, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, bridgesTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the server (is it running?): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var merr struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if json.Unmarshal(body, &merr) == nil && merr.Code != "" {
			return nil, fmt.Errorf("%s: %s", merr.Code, merr.Message)
		}
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return body, nil
}

func onOff(enabled bool) string {
	if enabled {
		return "on"
	}
	return "off"
}

func queueText(b *hub.BridgeInfo) string {
	n := fmt.Sprint(b.Queue.Length)
	if b.Queue.Capped {
		n += "+"
	}
	if b.Queue.Length > 0 {
		n += " (oldest " + (time.Duration(b.QueueAgeSeconds * float64(time.Second))).Round(time.Second).String() + ")"
	}
	return n
}

func printBridgeTable(w io.Writer, bridges []hub.BridgeInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BRIDGE\tSWITCH\tSTATE\tLOGINS\tPORTALS\tQUEUE\tLAST ERROR")
	for i := range bridges {
		b := &bridges[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", b.ID, onOff(b.Enabled), b.State, b.Logins, b.Portals,
			queueText(b), b.LastError)
	}
	_ = tw.Flush()
}

func printBridge(w io.Writer, b *hub.BridgeInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "bridge:\t%s\n", b.ID)
	fmt.Fprintf(tw, "switch:\t%s\n", onOff(b.Enabled))
	fmt.Fprintf(tw, "state:\t%s\n", b.State)
	fmt.Fprintf(tw, "logins:\t%d\n", b.Logins)
	fmt.Fprintf(tw, "portals:\t%d\n", b.Portals)
	fmt.Fprintf(tw, "queue:\t%s\n", queueText(b))
	fmt.Fprintf(tw, "delivered:\t%d transactions since start (stream position %d)\n", b.Delivered, b.StreamPos)
	if b.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", b.LastError)
	}
	_ = tw.Flush()
}
