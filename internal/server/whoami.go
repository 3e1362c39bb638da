package server

import (
	"net/http"
	"slices"

	"github.com/rampartfw/rampart/internal/api"
)

// mayRoles are the roles (besides admin) of what whoami's "may" names:
// the same roles the routes of those actions require in Handler, which
// TestWhoamiMatchesRoutes checks.
var mayRoles = []struct {
	may   string
	roles []string
}{
	{api.MayReadFleet, []string{RoleOperator, RoleAuditor}},
	{api.MayReadAudit, []string{RoleAuditor}},
	{api.MaySteerRollouts, []string{RoleOperator}},
	{api.MayRevokeKeys, []string{RoleOperator}},
}

// mayOf is what a role may do, as whoami names it.
func mayOf(role string) []string {
	may := []string{}
	for _, m := range mayRoles {
		if role == RoleAdmin || slices.Contains(m.roles, role) {
			may = append(may, m.may)
		}
	}
	return may
}

// handleWhoami answers who the token is: its name, its role and what
// the role may do, so the dashboard shows only the buttons it may use.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	tok := operator(r.Context())
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, api.Whoami{Name: tok.Name, Role: tok.Role, May: mayOf(tok.Role)})
}
