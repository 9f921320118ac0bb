package homeserver

import (
	"net/http"
	"path"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/homeserver/clientapi"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// middleware adds, around mux: a request logger in the context, the CORS headers the spec asks for on every
// response (web clients such as Element run from another origin), OPTIONS preflight answers, panic recovery
// (500 M_UNKNOWN, logged with the stack) and Matrix-style JSON errors for unknown paths (404) and known paths
// with the wrong method (405), both M_UNRECOGNIZED as the spec says.
func middleware(mux *http.ServeMux, log zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
		rlog := log.With().Str("method", r.Method).Str("path", r.URL.Path).Logger()
		r = r.WithContext(rlog.WithContext(r.Context()))
		if r.Method == http.MethodOptions {
			clientapi.RespondJSON(w, http.StatusOK, struct{}{})
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				rlog.Error().Any("panic", p).Bytes("stack", debug.Stack()).Msg("handler panicked")
				if !sw.wrote {
					clientapi.RespondJSON(sw, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": "internal server error"})
				}
			}
			rlog.Debug().Int("status", sw.status).Dur("took", time.Since(start)).Msg("request")
		}()
		// For a path with "..", "." or "//" segments the mux answers with an HTML redirect to the cleaned
		// path; no Matrix endpoint has such paths (and following the redirect could reach another resource,
		// e.g. /download/x/../../etc/passwd), so answer 404 M_UNRECOGNIZED in JSON instead.
		// Compare on the escaped path, as ServeMux does: %2F inside a path segment is data, not a separator.
		if ep := r.URL.EscapedPath(); r.Method != http.MethodConnect && cleanPath(ep) != ep {
			clientapi.RespondError(sw, r, mxerr.Unrecognized("unrecognized request"))
			return
		}
		handler, pattern := mux.Handler(r)
		if pattern == "" {
			// The mux's own 404/405 handlers write plain text; answer in JSON instead, keeping their status
			// and Allow header.
			probe := &probeWriter{header: http.Header{}}
			handler.ServeHTTP(probe, r)
			if allow := probe.header.Get("Allow"); allow != "" {
				h.Set("Allow", allow)
			}
			if probe.status == http.StatusMethodNotAllowed {
				clientapi.RespondError(sw, r, mxerr.New(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method not allowed on this endpoint"))
				return
			}
			if probe.status == http.StatusNotFound || probe.status == 0 {
				clientapi.RespondError(sw, r, mxerr.Unrecognized("unrecognized request"))
				return
			}
		}
		mux.ServeHTTP(sw, r)
	})
}

// statusWriter records the status for logs and whether anything was written.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// probeWriter captures what the mux's built-in error handler would write.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header         { return p.header }
func (p *probeWriter) WriteHeader(code int)        { p.status = code }
func (p *probeWriter) Write(b []byte) (int, error) { return len(b), nil }

// cleanPath is the path ServeMux would redirect to: path.Clean, rooted, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}
