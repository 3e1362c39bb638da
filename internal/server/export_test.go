package server

import "github.com/rampartfw/rampart/internal/hostedrepo"

// SetPushStep installs f as the hook called at each step of a push
// (hostedrepo.SetPushStep); nil removes it.
func SetPushStep(f func(step string) error) { hostedrepo.SetPushStep(f) }
