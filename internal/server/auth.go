package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/token"
)

// Operator roles. Admin may do everything; the others what their name says.
const (
	RoleAdmin          = "admin"
	RoleReleaseManager = "release-manager"
	RoleOperator       = "operator"
	RoleAuditor        = "auditor"
)

// Roles lists the valid operator roles.
var Roles = []string{RoleAdmin, RoleReleaseManager, RoleOperator, RoleAuditor}

// NewToken returns a fresh operator or enrollment token secret and the
// hash under which the store keeps it (token.New).
func NewToken() (secret, hash string) { return token.New() }

// HashToken is how token secrets are stored (token.Hash).
func HashToken(secret string) string { return token.Hash(secret) }

type ctxKey int

const operatorKey ctxKey = iota

// operator returns the authenticated operator token of a request.
func operator(ctx context.Context) store.OperatorToken {
	t, _ := ctx.Value(operatorKey).(store.OperatorToken)
	return t
}

// requireRole wraps h so that only a valid operator token with one of the
// roles (or admin) reaches it. The token is looked up on every request,
// so a role change or a revocation applies from the token's next request.
func (s *Server) requireRole(h http.HandlerFunc, roles ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || !strings.HasPrefix(secret, token.Prefix) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart"`)
			writeError(w, errorf(http.StatusUnauthorized, "unauthenticated", "an operator token is required: send Authorization: Bearer rmp_..."))
			return
		}
		tok, err := s.store.OperatorToken(r.Context(), HashToken(secret))
		switch {
		case errors.Is(err, store.ErrRevoked):
			// Only the holder of the secret learns that it was revoked.
			s.metrics.authFailures.Inc()
			s.auditRefusal(r, "token:"+tok.Name, "authenticate", r.Method+" "+r.URL.Path, "refused", map[string]string{"code": "token-revoked"})
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart", error="invalid_token"`)
			writeError(w, errorf(http.StatusUnauthorized, "token-revoked", "operator token %s was revoked at %s; ask an admin for a new one", tok.Name, tok.RevokedAt.Format(time.RFC3339)))
			return
		case errors.Is(err, store.ErrNotFound):
			s.metrics.authFailures.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="rampart", error="invalid_token"`)
			writeError(w, errorf(http.StatusUnauthorized, "unauthenticated", "the operator token is unknown"))
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		if tok.Role != RoleAdmin && !slices.Contains(roles, tok.Role) {
			s.auditRefusal(r, "token:"+tok.Name, "authorize", r.Method+" "+r.URL.Path, "denied", map[string]string{"role": tok.Role})
			writeError(w, errorf(http.StatusForbidden, "forbidden", "role %s may not do this; it needs %s", tok.Role, strings.Join(append([]string{RoleAdmin}, roles...), " or ")))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), operatorKey, tok)))
	}
}
