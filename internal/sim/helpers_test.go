package sim_test

import (
	"bytes"
	"errors"
	"sync"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// lockedBuffer is a bytes.Buffer the live view writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
