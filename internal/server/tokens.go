package server

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// Operator token management (admin only): create, list, change a role,
// revoke. Every call, refused or not, is in the audit log; an accepted
// change is committed with its audit entry in one transaction. Secrets
// and their hashes never leave the server: a secret is shown once, at
// creation.

// tokenNameRE: names appear in URLs (/api/v1/tokens/NAME/role) and audit
// actors (token:NAME), so they need no escaping and are never "." or "..".
var tokenNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// viewToken is how a token is shown: never its secret or hash.
func viewToken(t store.OperatorToken) api.Token {
	v := api.Token{Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt, Revoked: !t.RevokedAt.IsZero()}
	if v.Revoked {
		at := t.RevokedAt
		v.RevokedAt = &at
	}
	return v
}

func checkRole(role string) *apiError {
	if !slices.Contains(Roles, role) {
		return errorf(http.StatusBadRequest, "bad-role", "role %q is not one of %s", role, strings.Join(Roles, ", "))
	}
	return nil
}

// handleCreateToken creates an operator token; the secret is returned once.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	bad := checkRole(req.Role)
	if bad == nil && !tokenNameRE.MatchString(req.Name) {
		bad = errorf(http.StatusBadRequest, "bad-name", "token name %q must be 1-64 of a-z 0-9 . _ -, starting with a letter or digit", req.Name)
	}
	if bad != nil {
		s.refuse(w, r, operatorActor(r), "create-token", req.Name, bad, nil)
		return
	}
	secret, hash := NewToken()
	ok := s.operatorAction(w, r, "create-token", req.Name, func(tx store.Tx) (event, error) {
		err := tx.CreateOperatorToken(r.Context(), store.OperatorToken{Hash: hash, Name: req.Name, Role: req.Role, CreatedAt: s.now()})
		if errors.Is(err, store.ErrExists) {
			return event{}, errorf(http.StatusConflict, "exists", "a token named %s exists (names are never reused, not even after revocation); pick another name", req.Name)
		}
		return event{operatorActor(r), "create-token", req.Name, "ok", map[string]string{"role": req.Role}}, err
	})
	if ok {
		writeJSON(w, http.StatusCreated, api.TokenCreated{Name: req.Name, Role: req.Role, Token: secret})
	}
}

// handleListTokens lists every operator token, revoked ones included.
func (s *Server) handleListTokens(w http.ResponseWriter, r *http.Request) {
	var views []api.Token
	ok := s.operatorAction(w, r, "list-tokens", "", func(tx store.Tx) (event, error) {
		toks, err := tx.OperatorTokens(r.Context())
		if err != nil {
			return event{}, err
		}
		views = make([]api.Token, 0, len(toks))
		for _, t := range toks {
			views = append(views, viewToken(t))
		}
		return event{operatorActor(r), "list-tokens", "", "ok", nil}, nil
	})
	if ok {
		writeJSON(w, http.StatusOK, api.TokenList{Tokens: views})
	}
}

// changeableToken loads token name in tx for a change and refuses an
// unknown or revoked token, or a change that would leave no live admin
// token (dropsAdmin says whether the change takes the admin role away
// from name, when it has it).
func changeableToken(ctx context.Context, tx store.Tx, name string, dropsAdmin bool) (store.OperatorToken, error) {
	toks, err := tx.OperatorTokens(ctx)
	if err != nil {
		return store.OperatorToken{}, err
	}
	var found *store.OperatorToken
	admins := 0
	for i, t := range toks {
		if t.Name == name {
			found = &toks[i]
		}
		if t.Role == RoleAdmin && t.RevokedAt.IsZero() {
			admins++
		}
	}
	switch {
	case found == nil:
		return store.OperatorToken{}, errorf(http.StatusNotFound, "not-found", "no operator token named %s (rampart token list shows them)", name)
	case !found.RevokedAt.IsZero():
		return *found, errorf(http.StatusConflict, "token-revoked", "token %s was revoked at %s; revoked tokens cannot be changed", name, found.RevokedAt.Format(time.RFC3339))
	case found.Role == RoleAdmin && dropsAdmin && admins == 1:
		return *found, lastAdmin(name)
	}
	return *found, nil
}

func lastAdmin(name string) *apiError {
	return errorf(http.StatusConflict, "last-admin", "token %s is the last admin token; create another admin token first, or nobody could manage tokens any more", name)
}

// handleSetTokenRole changes a token's role. It applies from the token's
// next request: roles are read from the store on every request.
func (s *Server) handleSetTokenRole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.RoleRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if bad := checkRole(req.Role); bad != nil {
		s.refuse(w, r, operatorActor(r), "set-token-role", name, bad, nil)
		return
	}
	var tok store.OperatorToken
	ok := s.operatorAction(w, r, "set-token-role", name, func(tx store.Tx) (event, error) {
		t, err := changeableToken(r.Context(), tx, name, req.Role != RoleAdmin)
		if err != nil {
			return event{}, err
		}
		if err := tx.SetOperatorTokenRole(r.Context(), name, req.Role); err != nil {
			return event{}, err
		}
		from := t.Role
		t.Role = req.Role
		tok = t
		return event{operatorActor(r), "set-token-role", name, "ok", map[string]string{"from": from, "to": req.Role}}, nil
	})
	if ok {
		writeJSON(w, http.StatusOK, viewToken(tok))
	}
}

// handleRevokeToken revokes a token: its next request gets 401
// token-revoked.
func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ok := s.operatorAction(w, r, "revoke-token", name, func(tx store.Tx) (event, error) {
		t, err := changeableToken(r.Context(), tx, name, true)
		if err != nil {
			return event{}, err
		}
		if err := tx.RevokeOperatorToken(r.Context(), name, s.now()); err != nil {
			return event{}, err
		}
		return event{operatorActor(r), "revoke-token", name, "ok", map[string]string{"role": t.Role}}, nil
	})
	if ok {
		w.WriteHeader(http.StatusNoContent)
	}
}
