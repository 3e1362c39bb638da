package uptane

// Hits is how many repository refreshes reused m's trusted sets.
func (m *Memo) Hits() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}
