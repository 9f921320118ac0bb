package clientapi

import (
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

func (a *API) mediaConfig(w http.ResponseWriter, r *http.Request, _ *Auth) {
	RespondJSON(w, http.StatusOK, map[string]int64{"m.upload.size": a.media.MaxBytes()})
}

// uploadReadTimeout is how long a media upload's body may take to arrive: enough for the largest allowed upload
// (tens of MiB) at a slow mobile rate of ~100 KiB/s, while a stalled upload still ends eventually.
const uploadReadTimeout = 10 * time.Minute

func (a *API) upload(w http.ResponseWriter, r *http.Request, au *Auth) {
	if r.ContentLength > a.media.MaxBytes() {
		RespondError(w, r, mxerr.TooLarge("upload is larger than %d bytes", a.media.MaxBytes()))
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct != "" {
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad Content-Type"))
			return
		}
	}
	// The HTTP server's read timeout (hub: 60 s) is sized for small JSON bodies; a large upload on a slow link
	// needs longer, so give it uploadReadTimeout from now (ignored when the server does not support deadlines).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	filename := r.URL.Query().Get("filename")
	uri, err := a.media.Upload(r.Context(), au.User, ct, filename, r.Body)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]string{"content_uri": uri.String()})
}

// createMedia reserves a media ID for an asynchronous upload (POST /_matrix/media/v1/create).
func (a *API) createMedia(w http.ResponseWriter, r *http.Request, au *Auth) {
	uri, expires, err := a.media.Create(r.Context(), au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]any{"content_uri": uri.String(), "unused_expires_at": expires.UnixMilli()})
}

// uploadTo sends the content of a media ID reserved with createMedia
// (PUT /_matrix/media/v3/upload/{serverName}/{mediaID}).
func (a *API) uploadTo(w http.ResponseWriter, r *http.Request, au *Auth) {
	if r.ContentLength > a.media.MaxBytes() {
		RespondError(w, r, mxerr.TooLarge("upload is larger than %d bytes", a.media.MaxBytes()))
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct != "" {
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			RespondError(w, r, mxerr.InvalidParam("bad Content-Type"))
			return
		}
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	err := a.media.UploadTo(r.Context(), au.User, r.PathValue("serverName"), r.PathValue("mediaID"), ct,
		r.URL.Query().Get("filename"), r.Body)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// defaultMediaWait and maxMediaWait bound how long a download of reserved but not yet uploaded media waits for
// the content (the timeout_ms query parameter; the spec's default is 20 s).
const (
	defaultMediaWait = 20 * time.Second
	maxMediaWait     = 60 * time.Second
)

// waitForUpload returns once the media of the request exists, or answers 504 M_NOT_YET_UPLOADED (and returns
// false) when it is reserved and its content does not arrive within timeout_ms. Unknown media falls through
// to the normal 404.
func (a *API) waitForUpload(w http.ResponseWriter, r *http.Request) bool {
	server, mid := r.PathValue("serverName"), r.PathValue("mediaID")
	pending, err := a.media.Pending(r.Context(), server, mid)
	if err != nil {
		RespondError(w, r, err)
		return false
	}
	if !pending {
		return true
	}
	wait := defaultMediaWait
	if ms, err := strconv.ParseInt(r.URL.Query().Get("timeout_ms"), 10, 64); err == nil && ms >= 0 {
		wait = min(time.Duration(ms)*time.Millisecond, maxMediaWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return false
		case <-deadline.C:
			RespondError(w, r, mxerr.New(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "the media has not been uploaded yet"))
			return false
		case <-tick.C:
			if pending, err = a.media.Pending(r.Context(), server, mid); err != nil {
				RespondError(w, r, err)
				return false
			} else if !pending {
				return true
			}
		}
	}
}

func (a *API) download(w http.ResponseWriter, r *http.Request) {
	a.serveMedia(w, r)
}

func (a *API) downloadAuthed(w http.ResponseWriter, r *http.Request, _ *Auth) {
	a.serveMedia(w, r)
}

// inlineTypes may be shown inline by browsers; everything else is served as an attachment so that a browser
// never renders uploaded HTML or SVG in our origin.
var inlineTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true, "image/apng": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "audio/mpeg": true, "audio/ogg": true, "audio/wav": true,
	"audio/webm": true, "audio/mp4": true, "audio/aac": true, "audio/flac": true, "text/plain": true,
}

func (a *API) serveMedia(w http.ResponseWriter, r *http.Request) {
	if !a.waitForUpload(w, r) {
		return
	}
	meta, f, err := a.media.Open(r.Context(), r.PathValue("serverName"), r.PathValue("mediaID"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	defer f.Close()
	name := r.PathValue("fileName")
	if name == "" {
		name = meta.Filename
	}
	base, _, _ := mime.ParseMediaType(meta.ContentType)
	disp := "attachment"
	if inlineTypes[base] {
		disp = "inline"
	}
	if name != "" {
		disp = mime.FormatMediaType(disp, map[string]string{"filename": name})
		if disp == "" {
			disp = "attachment"
		}
	}
	h := w.Header()
	h.Set("Content-Type", meta.ContentType)
	h.Set("Content-Disposition", disp)
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=86400, immutable")
	h.Set("Content-Length", strconv.FormatInt(meta.Size, 10))
	http.ServeContent(w, r, "", timeFromMillis(meta.CreatedTS), f)
}

func (a *API) thumbnail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	width, err1 := strconv.Atoi(q.Get("width"))
	height, err2 := strconv.Atoi(q.Get("height"))
	if err1 != nil || err2 != nil {
		RespondError(w, r, mxerr.InvalidParam("width and height must be integers"))
		return
	}
	ct, data, err := a.media.Thumbnail(r.Context(), r.PathValue("serverName"), r.PathValue("mediaID"), width, height, q.Get("method"))
	if err != nil {
		RespondError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Content-Disposition", "inline; filename=thumbnail")
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; object-src 'none';")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=86400, immutable")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

func (a *API) thumbnailAuthed(w http.ResponseWriter, r *http.Request, _ *Auth) {
	a.thumbnail(w, r)
}
