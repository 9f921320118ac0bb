// Package mxerr defines the Matrix error values (the spec's M_* codes with their HTTP status) that the
// homeserver's services return and its HTTP layer writes. Services return these so that the edge needs no
// mapping table; any other error reaching the edge is an internal error (500, M_UNKNOWN) and is logged.
//
// It imports nothing from the project.
package mxerr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a Matrix error: an errcode, a human-readable message and the HTTP status it is sent with.
type Error struct {
	Status  int            `json:"-"`
	Code    string         `json:"errcode"`
	Message string         `json:"error"`
	Extra   map[string]any `json:"-"`
}

// Error implements the error interface.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is reports whether target is an *Error with the same code, so errors.Is(err, mxerr.Forbidden("")) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// New returns an error with the given status, code and message.
func New(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Constructors for the codes the homeserver uses, each with the status the spec gives it.
func Forbidden(format string, a ...any) *Error {
	return New(http.StatusForbidden, "M_FORBIDDEN", format, a...)
}
func UnknownToken(format string, a ...any) *Error {
	return New(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", format, a...)
}
func MissingToken(format string, a ...any) *Error {
	return New(http.StatusUnauthorized, "M_MISSING_TOKEN", format, a...)
}
func BadJSON(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_BAD_JSON", format, a...)
}
func NotJSON(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_NOT_JSON", format, a...)
}
func NotFound(format string, a ...any) *Error {
	return New(http.StatusNotFound, "M_NOT_FOUND", format, a...)
}
func LimitExceeded(format string, a ...any) *Error {
	return New(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", format, a...)
}
func Unrecognized(format string, a ...any) *Error {
	return New(http.StatusNotFound, "M_UNRECOGNIZED", format, a...)
}
func Unknown(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_UNKNOWN", format, a...)
}
func UserInUse(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_USER_IN_USE", format, a...)
}
func InvalidUsername(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_INVALID_USERNAME", format, a...)
}
func RoomInUse(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_ROOM_IN_USE", format, a...)
}
func InvalidParam(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_INVALID_PARAM", format, a...)
}
func MissingParam(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_MISSING_PARAM", format, a...)
}
func TooLarge(format string, a ...any) *Error {
	return New(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, a...)
}
func Exclusive(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_EXCLUSIVE", format, a...)
}
func UnsupportedRoomVersion(format string, a ...any) *Error {
	return New(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", format, a...)
}
func GuestAccessForbidden(format string, a ...any) *Error {
	return New(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", format, a...)
}
func UserDeactivated(format string, a ...any) *Error {
	return New(http.StatusForbidden, "M_USER_DEACTIVATED", format, a...)
}
func Internal(format string, a ...any) *Error {
	return New(http.StatusInternalServerError, "M_UNKNOWN", format, a...)
}
