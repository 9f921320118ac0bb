package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/appservice"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// StatusPath is the admin-only endpoint that reports the in-process bridges and the appservice queues.
const StatusPath = "/_passerelle/admin/v1/status"

// BridgesPath is the root of the admin-only bridge API:
//
//	GET  BridgesPath                 → BridgeList (every in-process bridge)
//	GET  BridgesPath/status/{id}     → BridgeInfo
//	POST BridgesPath/enable/{id}     → BridgeInfo after switching the bridge on
//	POST BridgesPath/disable/{id}    → BridgeInfo after switching it off
//
// Every call needs a server admin's access token (Authorization: Bearer, or ?access_token=); others get
// M_MISSING_TOKEN / M_UNKNOWN_TOKEN (401) or M_FORBIDDEN (403); an unknown bridge is M_NOT_FOUND (404).
const BridgesPath = "/_passerelle/admin/v1/bridges"

// StatusResponse is the body of GET StatusPath.
type StatusResponse struct {
	Bridges     []appservice.BridgeStatus `json:"bridges"`
	Appservices []appservice.SenderStatus `json:"appservices"`
}

// BridgeList is the body of GET BridgesPath.
type BridgeList struct {
	Bridges []BridgeInfo `json:"bridges"`
}

// BridgeInfo is the status of one in-process bridge for administrators.
type BridgeInfo struct {
	ID string `json:"id"`
	// Enabled is the administrators' switch (kept across restarts).
	Enabled bool `json:"enabled"`
	// State is the bridge's life-cycle state (running, failed, ...); StartError says why it failed.
	State      appservice.BridgeState `json:"state"`
	StartError string                 `json:"start_error,omitempty"`
	// Logins and Portals count the bridge's remote-network logins and its portal rooms.
	Logins  int `json:"logins"`
	Portals int `json:"portals"`
	// Queue is what the bridge has not acknowledged yet; QueueAgeSeconds is how long its oldest event waits.
	Queue           QueueInfo `json:"queue"`
	QueueAgeSeconds float64   `json:"queue_age_seconds"`
	// StreamPos, PendingTxn, Failures, Delivered come from the appservice sender.
	StreamPos  int64  `json:"stream_pos"`
	PendingTxn string `json:"pending_txn,omitempty"`
	Failures   int    `json:"failures"`
	Delivered  int64  `json:"delivered"`
	// LastError is the last error seen: a failed delivery, else the start error.
	LastError string `json:"last_error,omitempty"`
}

// mountAdmin registers the hub's own admin routes and /metrics on the homeserver mux.
func (h *Hub) mountAdmin() {
	h.hs.Handle("GET "+StatusPath, h.adminOnly(h.serveStatus))
	h.hs.Handle("GET "+BridgesPath, h.adminOnly(h.serveBridgeList))
	h.hs.Handle("GET "+BridgesPath+"/status/{id}", h.adminOnly(h.serveBridgeStatus))
	h.hs.Handle("POST "+BridgesPath+"/enable/{id}", h.adminOnly(h.serveBridgeSwitch(true)))
	h.hs.Handle("POST "+BridgesPath+"/disable/{id}", h.adminOnly(h.serveBridgeSwitch(false)))
	h.hs.Handle("GET "+MetricsPath, h.metrics.handler(h.log))
}

type adminKey struct{}

// adminOnly lets server admins through (their user ID in the request context) and answers everyone else with
// the Matrix error.
func (h *Hub) adminOnly(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			writeMatrixError(w, mxerr.MissingToken("missing access token"))
			return
		}
		users := h.hs.Users()
		userID, _, err := users.Authenticate(ctx, token)
		if err != nil {
			h.writeError(w, "Authenticate admin request", err)
			return
		}
		admin, err := users.IsAdmin(ctx, userID)
		if err != nil {
			h.writeError(w, "Check admin for admin request", err)
			return
		}
		if !admin {
			writeMatrixError(w, mxerr.Forbidden("only server admins may use the bridge admin API"))
			return
		}
		next(w, r.WithContext(context.WithValue(ctx, adminKey{}, userID)))
	})
}

// serveStatus answers GET StatusPath.
func (h *Hub) serveStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, StatusResponse{Bridges: h.host.Status(), Appservices: h.sender.Status()})
}

func (h *Hub) serveBridgeList(w http.ResponseWriter, r *http.Request) {
	list := BridgeList{Bridges: []BridgeInfo{}}
	for _, bridgeID := range h.host.IDs() {
		info, err := h.BridgeInfo(r.Context(), bridgeID)
		if err != nil {
			h.writeError(w, "Read bridge status", err)
			return
		}
		list.Bridges = append(list.Bridges, *info)
	}
	writeJSON(w, list)
}

func (h *Hub) serveBridgeStatus(w http.ResponseWriter, r *http.Request) {
	info, err := h.BridgeInfo(r.Context(), r.PathValue("id"))
	if err != nil {
		h.writeError(w, "Read bridge status", err)
		return
	}
	writeJSON(w, info)
}

func (h *Hub) serveBridgeSwitch(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		bridgeID := r.PathValue("id")
		by, _ := ctx.Value(adminKey{}).(id.UserID)
		if err := h.SetBridgeEnabled(ctx, bridgeID, enabled, by); err != nil {
			h.writeError(w, "Switch bridge", err)
			return
		}
		info, err := h.BridgeInfo(ctx, bridgeID)
		if err != nil {
			h.writeError(w, "Read bridge status", err)
			return
		}
		writeJSON(w, info)
	}
}

// BridgeInfo returns the administrators' view of one in-process bridge (mxerr.NotFound for an unknown ID).
func (h *Hub) BridgeInfo(ctx context.Context, bridgeID string) (*BridgeInfo, error) {
	var info *BridgeInfo
	for _, st := range h.host.Status() {
		if st.ID == bridgeID {
			info = &BridgeInfo{ID: st.ID, Enabled: st.Enabled, State: st.State, StartError: st.Error, LastError: st.Error}
		}
	}
	if info == nil {
		return nil, mxerr.NotFound("no bridge %q", bridgeID)
	}
	var err error
	if info.Logins, info.Portals, err = h.host.Counts(ctx, bridgeID); err != nil {
		return nil, err
	}
	for _, st := range h.sender.Status() {
		if st.ID != bridgeID {
			continue
		}
		info.StreamPos, info.PendingTxn, info.Failures, info.Delivered = st.StreamPos, st.PendingTxn, st.Failures, st.Delivered
		if st.LastError != "" {
			info.LastError = st.LastError
		}
		if info.Queue, err = h.queueOf(ctx, bridgeID, st.StreamPos); err != nil {
			return nil, err
		}
		info.QueueAgeSeconds = info.Queue.OldestAge().Seconds()
	}
	return info, nil
}

// SetBridgeEnabled switches an in-process bridge on or off at runtime and records the switch (by whom) so it
// survives restarts. Switching on also restarts a sender that had started backing off while the bridge was
// off, so queued events flow at once rather than after the backoff. mxerr.NotFound for an unknown bridge.
func (h *Hub) SetBridgeEnabled(ctx context.Context, bridgeID string, enabled bool, by id.UserID) error {
	was, ok := h.host.Enabled(bridgeID)
	if !ok {
		return mxerr.NotFound("no bridge %q", bridgeID)
	}
	if err := h.switches.set(ctx, bridgeID, enabled, by); err != nil {
		return err
	}
	if err := h.host.SetEnabled(ctx, bridgeID, enabled); err != nil {
		// Keep the stored switch in line with what runs.
		if err2 := h.switches.set(context.WithoutCancel(ctx), bridgeID, was, by); err2 != nil {
			h.log.Err(err2).Str("bridge_id", bridgeID).Msg("Cannot restore the stored bridge switch")
		}
		return err
	}
	h.log.Info().Str("bridge_id", bridgeID).Bool("enabled", enabled).Stringer("by", by).Msg("Bridge switched")
	if enabled {
		for _, st := range h.sender.Status() {
			if st.ID == bridgeID && st.Failures > 0 {
				h.restartSender()
			}
		}
	}
	return nil
}

// writeError answers with err's Matrix error, or logs it and answers 500.
func (h *Hub) writeError(w http.ResponseWriter, what string, err error) {
	if e := mxerr.As(err); e != nil {
		writeMatrixError(w, e)
		return
	}
	if errors.Is(err, appservice.ErrUnknownBridge) {
		writeMatrixError(w, mxerr.NotFound("%s", err.Error()))
		return
	}
	h.log.Err(err).Msg(what)
	writeMatrixError(w, mxerr.Internal("internal error"))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeMatrixError(w http.ResponseWriter, e *mxerr.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e)
}

// restartSender stops and starts the appservice sender so that workers sleeping in a retry backoff try again
// at once. An in-flight transaction is abandoned and resent with the same ID (appservices deduplicate by ID).
func (h *Hub) restartSender() {
	h.runMu.Lock()
	defer h.runMu.Unlock()
	if h.runCtx == nil || h.stopping {
		return
	}
	h.sender.Stop()
	if err := h.sender.Start(h.runCtx); err != nil {
		h.log.Err(err).Msg("Cannot restart the appservice sender after enabling a bridge")
	}
}
