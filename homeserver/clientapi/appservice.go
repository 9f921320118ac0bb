package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// pingTimeout bounds the homeserver → appservice ping; the spec asks for M_CONNECTION_TIMEOUT when it expires.
const pingTimeout = 15 * time.Second

func timeFromMillis(ms int64) time.Time { return time.UnixMilli(ms) }

func (a *API) appservicePing(w http.ResponseWriter, r *http.Request, au *Auth) {
	asID := r.PathValue("appserviceID")
	if au.AS == nil || au.AS.ID != asID {
		RespondError(w, r, mxerr.Forbidden("only the appservice %q may ping itself", asID))
		return
	}
	var req struct {
		TransactionID string `json:"transaction_id,omitempty"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if au.AS.URL == "" {
		RespondError(w, r, mxerr.New(http.StatusBadRequest, "M_URL_NOT_SET", "the appservice has no URL"))
		return
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(au.AS.URL, "/")+"/_matrix/app/v1/ping", bytes.NewReader(body))
	if err != nil {
		RespondError(w, r, mxerr.New(http.StatusBadRequest, "M_URL_NOT_SET", "the appservice URL is invalid"))
		return
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+au.AS.ServerToken)
	start := time.Now()
	resp, err := a.asClient.Do(hreq)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			RespondError(w, r, mxerr.New(http.StatusGatewayTimeout, "M_CONNECTION_TIMEOUT", "the appservice did not answer in time"))
			return
		}
		RespondError(w, r, mxerr.New(http.StatusBadGateway, "M_CONNECTION_FAILED", "could not reach the appservice"))
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	took := time.Since(start)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := mxerr.New(http.StatusBadGateway, "M_BAD_STATUS", "the appservice answered %d", resp.StatusCode)
		e.Extra = map[string]any{"status": resp.StatusCode, "body": string(respBody)}
		RespondError(w, r, e)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]int64{"duration_ms": took.Milliseconds()})
}
