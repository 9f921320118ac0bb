package hub

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// errNotFound matches any mxerr M_NOT_FOUND with errors.Is.
var errNotFound = mxerr.NotFound("")

// txnPathPart marks an Application Service API transaction push.
const txnPathPart = "/_matrix/app/v1/transactions/"

// senderTransport carries the appservice sender's requests. For each transaction it
//   - holds it back while the target is an in-process bridge switched off by an administrator: the request
//     waits until the bridge is enabled or the sender's own per-request timeout ends it (then the sender keeps
//     the transaction and retries it with the same ID). Nothing is acknowledged, so the appservice stream keeps
//     every event and delivery resumes exactly where it stopped.
//   - measures its latency and counts failures for /metrics.
//
// A transaction that already passed the gate when the bridge is switched off completes normally.
type senderTransport struct {
	h    *Hub
	next http.RoundTripper
	// onDelivered, if set (tests), is called after each acknowledged transaction.
	onDelivered func(asID, txnID string, body []byte)
}

// RoundTrip implements http.RoundTripper.
func (t *senderTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	asID := t.h.asForURL(req.URL.String())
	if asID == "" || req.Method != http.MethodPut || !strings.Contains(req.URL.Path, txnPathPart) {
		return t.next.RoundTrip(req)
	}
	if err := t.h.host.WaitEnabled(req.Context(), asID); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("bridge %s is switched off by an administrator: transaction held back (%w)", asID, err)
	}
	var body []byte
	if t.onDelivered != nil && req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			body, _ = io.ReadAll(rc)
			_ = rc.Close()
		}
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	ok := err == nil && resp.StatusCode >= 200 && resp.StatusCode <= 299
	t.h.metrics.observeTxn(asID, time.Since(start), ok)
	if ok && t.onDelivered != nil {
		txnID := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
		t.onDelivered(asID, txnID, body)
	}
	return resp, err
}

// asForURL returns the ID of the appservice whose registration URL is a prefix of u, or "".
func (h *Hub) asForURL(u string) string {
	for _, r := range h.regs {
		base := strings.TrimRight(r.URL, "/")
		if base != "" && strings.HasPrefix(u, base+"/") {
			return r.ID
		}
	}
	return ""
}
