package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/imagerepo"
	"github.com/rampartfw/rampart/internal/store"
)

// apiError is every refusal's JSON body: a stable code and a message that
// says what to fix.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Role    string `json:"role,omitempty"`
}

func (e *apiError) Error() string { return e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// toAPIError maps internal errors to statuses and codes. Anything it does
// not recognise is a 500 whose detail stays in the server log.
func toAPIError(err error) *apiError {
	var ae *apiError
	var ie *imagerepo.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ie):
		status := http.StatusUnprocessableEntity
		if ie.Code == imagerepo.VersionNotNext {
			status = http.StatusConflict
		}
		return &apiError{Status: status, Code: string(ie.Code), Message: ie.Msg, Role: ie.Role}
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too-large", "the request body exceeds %d bytes", mbe.Limit)
	case errors.Is(err, blob.ErrMismatch):
		return errorf(http.StatusUnprocessableEntity, "blob-mismatch", "%v", err)
	case errors.Is(err, blob.ErrInvalidDigest):
		return errorf(http.StatusBadRequest, "bad-digest", "%v", err)
	case errors.Is(err, blob.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "not-found", "%v", err)
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, "conflict", "%v; another push won the race, fetch the current state and retry", err)
	}
	return errorf(http.StatusInternalServerError, "internal", "internal error; see the server log")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

// decodeJSON reads a bounded, strict JSON body.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "bad-json", "malformed JSON body: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad-json", "malformed JSON body: data after the JSON value")
	}
	return nil
}
