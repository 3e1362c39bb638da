package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/director"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/hosteddirector"
	"github.com/rampartfw/rampart/internal/hostedrepo"
	"github.com/rampartfw/rampart/internal/pushaccept"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/strictjson"
)

// apiError is every refusal's JSON body: a stable code and a message that
// says what to fix.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Role    string `json:"role,omitempty"`
	// cause is the failure behind a 5xx, for the server log only.
	cause error
	// retryAfter, when positive, is sent as Retry-After (seconds).
	retryAfter int
}

// storeRetryAfter is the Retry-After of a request refused because the
// metadata store is unavailable: long enough not to hammer a database
// coming back, short enough that a device retries soon after.
const storeRetryAfter = 5

func (e *apiError) Error() string { return e.Message }

// wire is the error as the body carries it.
func (e *apiError) wire() api.Error {
	return api.Error{Code: api.Code(e.Code), Message: e.Message, Role: e.Role}
}

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// toAPIError maps internal errors to statuses and codes. Anything it does
// not recognise is a 500 whose detail stays in the server log.
func toAPIError(err error) *apiError {
	var ae *apiError
	var ie *pushaccept.Error
	var hr *hostedrepo.Refusal
	var dr *director.RootError
	var mbe *http.MaxBytesError
	var fr *fleet.Refusal
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrUnavailable):
		// The database is down or the connection to it broke: nothing
		// the request did is committed (a transaction whose connection
		// breaks is rolled back), and the server answers again as soon
		// as the database is back, without a restart.
		ae := errorf(http.StatusServiceUnavailable, "store-unavailable", "the metadata store is unavailable; nothing was changed; retry in a few seconds")
		ae.cause, ae.retryAfter = err, storeRetryAfter
		return ae
	case errors.As(err, &fr):
		return &apiError{Status: fleetStatus[fr.Kind], Code: string(fr.Code), Message: fr.Msg}
	case errors.As(err, &ie):
		status := http.StatusUnprocessableEntity
		if ie.Code == pushaccept.VersionNotNext {
			status = http.StatusConflict
		}
		return &apiError{Status: status, Code: string(ie.Code), Message: ie.Msg, Role: ie.Role}
	case errors.As(err, &hr):
		status := http.StatusUnprocessableEntity
		if hr.Code == hostedrepo.Conflict || hr.Code == hostedrepo.ReleaseLogged {
			status = http.StatusConflict
		}
		return &apiError{Status: status, Code: string(hr.Code), Message: hr.Msg, Role: hr.Role}
	case errors.As(err, &dr):
		status := http.StatusUnprocessableEntity
		if dr.NotFirst {
			status = http.StatusConflict
		}
		return &apiError{Status: status, Code: string(dr.Code), Message: dr.Msg}
	case errors.Is(err, hosteddirector.ErrNoRoot):
		return errorf(http.StatusServiceUnavailable, "no-director-root", "%v", err)
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too-large", "the request body exceeds %d bytes", mbe.Limit)
	case errors.Is(err, blob.ErrInsufficientStorage):
		// The quota or the disk reserve: refused before the upload was
		// read, so that reports and the audit log keep their room.
		var se *blob.StorageError
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.Error()
		}
		return errorf(http.StatusInsufficientStorage, "insufficient-storage", "upload refused: %s", msg)
	case errors.Is(err, blob.ErrMismatch):
		return errorf(http.StatusUnprocessableEntity, "blob-mismatch", "%v", err)
	case errors.Is(err, blob.ErrInvalidDigest):
		return errorf(http.StatusBadRequest, "bad-digest", "%v", err)
	case errors.Is(err, blob.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "not-found", "%v", err)
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, "conflict", "%v; another push won the race, fetch the current state and retry", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// A request body that stopped arriving (see guard).
		return errorf(http.StatusRequestTimeout, "timeout", "%v", err)
	}
	ae = errorf(http.StatusInternalServerError, "internal", "internal error; see the server log")
	ae.cause = err
	return ae
}

// fleetStatus is the status of each kind of fleet refusal.
var fleetStatus = map[fleet.Kind]int{
	fleet.Invalid:         http.StatusBadRequest,
	fleet.Unauthenticated: http.StatusUnauthorized,
	fleet.Forbidden:       http.StatusForbidden,
	fleet.NotFound:        http.StatusNotFound,
	fleet.Conflict:        http.StatusConflict,
	fleet.Unprocessable:   http.StatusUnprocessableEntity,
	fleet.Unavailable:     http.StatusServiceUnavailable,
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers e. A 500 is logged, with its cause and the request
// id, when the request ends (see guard).
func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status >= 500 {
		if x := exchangeOf(w); x != nil {
			x.recordFailure(e)
		}
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.Status, api.ErrorBody{Error: e.wire()})
}

// decodeJSON reads a bounded JSON body with the code base's one strict
// decoder (internal/strictjson): a member given twice or in another case,
// an unknown member, or a number its field cannot hold is a 400 bad-json
// naming the member, so no two parsers can read one request differently.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errors.Is(err, os.ErrDeadlineExceeded) {
			return err // 413, or 408 for a body that stopped arriving
		}
		return errorf(http.StatusBadRequest, "bad-json", "reading the JSON body: %v", err)
	}
	if err := strictjson.Unmarshal(b, v); err != nil {
		var se *strictjson.Error
		if errors.As(err, &se) {
			return errorf(http.StatusBadRequest, "bad-json", "%v", se)
		}
		return err
	}
	return nil
}
