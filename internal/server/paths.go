package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/hostedrepo"
)

// Paths, in URLs and in pushed target names, are refused unless they are
// in plain canonical form. Nothing the server serves or stores is named by
// a path with an empty, "." or ".." segment, a backslash, a control
// character or a percent sign, so refusing them up front costs nothing
// and keeps every later lookup (store keys, blob names, tile files) away
// from names that mean something else to a file system or a proxy.

// unsafePath returns why a path is not canonical, or "" when it is.
// rooted paths (URLs) start with "/" and may end with one; target names
// may do neither.
func unsafePath(p string, rooted bool) string {
	if rooted {
		if !strings.HasPrefix(p, "/") {
			return "it does not start with /"
		}
		if strings.Contains(p, "//") {
			return "it has an empty segment (//)"
		}
		p = strings.TrimSuffix(p[1:], "/")
		if p == "" {
			return ""
		}
	}
	if p == "" {
		return "it is empty"
	}
	if strings.HasPrefix(p, "/") {
		return "it is absolute"
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f:
			return fmt.Sprintf("it contains the control character %q", c)
		case c == '\\':
			return "it contains a backslash"
		case c == '%':
			return "it contains a percent sign"
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return "it has an empty segment (//)"
		case ".", "..":
			return fmt.Sprintf("it has a %q segment", seg)
		}
	}
	return ""
}

// refuseUnsafePaths answers 400 bad-path for a request whose decoded path
// is not canonical ("%2e%2e", "%2f" and "%00" are decoded first, so
// encoding does not help, and a decoded "%" means double encoding), before
// the mux would redirect it to a cleaned path.
func refuseUnsafePaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := unsafePath(r.URL.Path, true); why != "" {
			writeError(w, errorf(http.StatusBadRequest, "bad-path", "request path %q is refused: %s", r.URL.EscapedPath(), why))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkTargetNames refuses a push that names any target with an unsafe
// path, in any role, before anything else looks at it. pushaccept would
// refuse such a release too (it is not PRODUCT/VERSION/FILE); this check
// gives it one code and keeps unsafe names out of every later step.
// Metadata that does not parse is left to pushaccept to refuse.
func checkTargetNames(req hostedrepo.Push) error {
	check := func(role string, raw []byte) error {
		if raw == nil {
			return nil
		}
		m, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return nil
		}
		for name := range m.Signed.Targets {
			if why := unsafePath(name, false); why != "" {
				return &apiError{Status: http.StatusUnprocessableEntity, Code: "unsafe-target-path", Role: role,
					Message: fmt.Sprintf("role %s lists target %q: %s; target names are PRODUCT/VERSION/FILE", role, name, why)}
			}
		}
		return nil
	}
	if err := check(metadata.TARGETS, req.Targets); err != nil {
		return err
	}
	for role, raw := range req.Roles {
		if err := check(role, raw); err != nil {
			return err
		}
	}
	return nil
}
