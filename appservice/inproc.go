package appservice

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// InternalHost is the host name of the hub's in-process base URL. Requests for it never touch the network:
// InProcessTransport hands them to the hub's handler. ".internal" is reserved for private use (ICANN, 2024),
// so it can never be a real host that a bridge wants to reach.
const InternalHost = "passerelle.internal"

// InternalBaseURL is the homeserver address given to in-process bridges and the base of their registration URLs.
const InternalBaseURL = "http://" + InternalHost

// InProcessTransport is an http.RoundTripper that serves requests for InternalHost by calling a handler in the
// same process (no TCP, no serialisation beyond the HTTP body) and sends every other request through Fallback.
// The handler may be set after construction (the homeserver is built after the registrations).
type InProcessTransport struct {
	handler atomic.Pointer[http.Handler]
	// Fallback carries requests for other hosts (e.g. media a bridge downloads); nil means http.DefaultTransport.
	Fallback http.RoundTripper
}

// NewInProcessTransport returns a transport that routes InternalHost to h (which may be nil until SetHandler).
func NewInProcessTransport(h http.Handler) *InProcessTransport {
	t := &InProcessTransport{}
	if h != nil {
		t.SetHandler(h)
	}
	return t
}

// SetHandler sets the handler that serves InternalHost.
func (t *InProcessTransport) SetHandler(h http.Handler) { t.handler.Store(&h) }

// Client returns an http.Client using this transport.
func (t *InProcessTransport) Client() *http.Client { return &http.Client{Transport: t} }

// RoundTrip implements http.RoundTripper. The handler runs on its own goroutine so a request whose context ends
// returns at once; the response is buffered (Matrix API answers are small JSON documents; media bodies are
// bounded by the homeserver's upload limit).
func (t *InProcessTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.EqualFold(req.URL.Hostname(), InternalHost) {
		fb := t.Fallback
		if fb == nil {
			fb = http.DefaultTransport
		}
		return fb.RoundTrip(req)
	}
	hp := t.handler.Load()
	if hp == nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("in-process request to %s: hub handler not set yet", req.URL.Path)
	}
	h := *hp

	// The server side gets its own request value, as net/http would give it.
	sreq := req.Clone(req.Context())
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:0"
	sreq.Host = req.URL.Host
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	rec := &recorder{header: make(http.Header)}
	done := make(chan any, 1)
	go func() {
		defer func() {
			p := recover()
			if p == http.ErrAbortHandler {
				p = nil
			}
			done <- p
		}()
		h.ServeHTTP(rec, sreq)
	}()
	select {
	case p := <-done:
		if req.Body != nil {
			_ = req.Body.Close()
		}
		if p != nil {
			return nil, fmt.Errorf("in-process handler for %s panicked: %v", req.URL.Path, p)
		}
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	status, header := rec.status, rec.sent
	if !rec.wroteHeader {
		status, header = http.StatusOK, rec.header
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()),
		Request:       req,
	}, nil
}

// recorder is a buffering http.ResponseWriter. Only the handler goroutine touches it until it returns.
type recorder struct {
	header      http.Header
	sent        http.Header
	status      int
	body        bytes.Buffer
	wroteHeader bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.wroteHeader {
		return
	}
	r.wroteHeader = true
	r.status = code
	// Snapshot the header map as net/http does: later changes by the handler are not sent.
	r.sent = r.header.Clone()
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	return r.body.Write(p)
}

// Flush implements http.Flusher (a no-op: the body is delivered when the handler returns).
func (r *recorder) Flush() {}
