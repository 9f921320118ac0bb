package hub

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/passerelle/passerelle/appservice"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// StatusPath is the admin-only endpoint that reports the in-process bridges and the appservice queues.
const StatusPath = "/_passerelle/admin/v1/status"

// StatusResponse is the body of GET StatusPath.
type StatusResponse struct {
	Bridges     []appservice.BridgeStatus `json:"bridges"`
	Appservices []appservice.SenderStatus `json:"appservices"`
}

// mountAdmin registers the hub's own admin routes on the homeserver mux.
func (h *Hub) mountAdmin() {
	h.hs.Handle("GET "+StatusPath, http.HandlerFunc(h.serveStatus))
}

// serveStatus answers GET StatusPath for server admins (Authorization: Bearer <access token>).
func (h *Hub) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		writeMatrixError(w, mxerr.MissingToken("missing access token"))
		return
	}
	users := h.hs.Users()
	userID, _, err := users.Authenticate(ctx, token)
	if err != nil {
		if e := mxerr.As(err); e != nil {
			writeMatrixError(w, e)
			return
		}
		h.log.Err(err).Msg("Authenticate status request")
		writeMatrixError(w, mxerr.Internal("internal error"))
		return
	}
	admin, err := users.IsAdmin(ctx, userID)
	if err != nil {
		h.log.Err(err).Msg("Check admin for status request")
		writeMatrixError(w, mxerr.Internal("internal error"))
		return
	}
	if !admin {
		writeMatrixError(w, mxerr.Forbidden("only server admins may read the bridge status"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(StatusResponse{Bridges: h.host.Status(), Appservices: h.sender.Status()})
}

func writeMatrixError(w http.ResponseWriter, e *mxerr.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e)
}
