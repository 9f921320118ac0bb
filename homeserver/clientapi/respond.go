package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// MaxBodyBytes bounds every JSON request body. The spec limits events to 65,536 bytes; a request wrapping one
// event is the same size, and nothing else a client sends us is larger (media uploads are not JSON).
const MaxBodyBytes = 65536

// RespondJSON writes v as JSON with the given status.
func RespondJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"errcode":"M_UNKNOWN","error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// RespondError writes err as a Matrix error: an *mxerr.Error as-is, anything else as a logged 500 M_UNKNOWN
// that does not leak the cause to the client.
func RespondError(w http.ResponseWriter, r *http.Request, err error) {
	if e := mxerr.As(err); e != nil {
		body := map[string]any{"errcode": e.Code, "error": e.Message}
		for k, v := range e.Extra {
			body[k] = v
		}
		status := e.Status
		if status == 0 {
			status = http.StatusBadRequest
		}
		RespondJSON(w, status, body)
		return
	}
	zerolog.Ctx(r.Context()).Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
	RespondJSON(w, http.StatusInternalServerError, map[string]any{"errcode": "M_UNKNOWN", "error": "internal server error"})
}

// ReadJSON reads the request body (at most MaxBodyBytes) and decodes it into v. An empty body decodes as {}.
// It returns M_TOO_LARGE, M_NOT_JSON or M_BAD_JSON as the spec asks.
func ReadJSON(r *http.Request, v any) error {
	data, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(data, v)
}

// ReadBody reads the whole request body, refusing more than MaxBodyBytes with M_TOO_LARGE.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, mxerr.Unknown("could not read request body")
	}
	if len(data) > MaxBodyBytes {
		return nil, mxerr.TooLarge("request body is larger than %d bytes", MaxBodyBytes)
	}
	return data, nil
}

// DecodeJSON decodes data into v: not JSON at all → M_NOT_JSON; JSON of the wrong shape → M_BAD_JSON.
// An empty body decodes as {}.
func DecodeJSON(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	if !json.Valid(data) || !utf8.Valid(data) {
		return mxerr.NotJSON("request body is not valid JSON (or not UTF-8)")
	}
	if data[0] != '{' {
		return mxerr.BadJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return mxerr.BadJSON("field %q has the wrong type", te.Field)
		}
		return mxerr.BadJSON("request body has the wrong shape")
	}
	return nil
}
