package server

import (
	"time"

	"github.com/rampartfw/rampart/internal/hostedrepo"
)

// SetPushStep installs f as the hook called at each step of a push
// (hostedrepo.SetPushStep); nil removes it.
func SetPushStep(f func(step string) error) { hostedrepo.SetPushStep(f) }

// OnBackgroundRound makes s call f with the start and end of each round
// of its leased background work. Call it before Run.
func OnBackgroundRound(s *Server, f func(start, end time.Time)) { s.onBackground = f }
