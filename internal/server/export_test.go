package server

// SetPushStep installs f as the hook called at each step of a push (see
// pushStep); nil removes it.
func SetPushStep(f func(step string) error) {
	if f == nil {
		pushStepHook.Store(nil)
		return
	}
	pushStepHook.Store(&f)
}
