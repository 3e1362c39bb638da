// Package dashboard is rampart-server's operator dashboard: a single-page
// application of hand-written HTML, CSS and JavaScript modules, embedded
// in the binary and served under /ui/. There is no build step, no
// bundler, no CDN and no external font: the files in static/ are what the
// browser runs.
//
// The dashboard holds no credential of its own: the operator pastes an
// operator token, which the page keeps in JavaScript memory only (never
// in a URL, a cookie or web storage) and sends as Authorization: Bearer
// to the operator API, where requireRole checks it like any client's. As
// the browser never attaches it by itself, a cross-site request carries
// no credential. It learns its role from GET /api/v1/whoami to hide the
// buttons the role may not use; the server refuses them anyway.
//
// Every answer is served with a Content-Security-Policy that allows only
// the dashboard's own scripts and styles (no inline script or style, no
// framing), and the scripts insert text from the API with textContent
// only: a device's reports are hostile bytes. See docs/dashboard.md.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// CSP is the Content-Security-Policy of every dashboard answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard's files, the index at "/", with the
// security headers. Mount it under /ui with http.StripPrefix.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err)
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}
