package postgres

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rampartfw/rampart/internal/store/assigncache"
)

// A replica keeps its devices' assignments in memory (assigncache), as
// one server on SQLite does, so that a check-in runs no query while
// nothing was assigned. Other replicas change assignments too, so every
// transaction that writes the assignments table also sends a
// notification on assignChannel (PostgreSQL delivers it when, and only
// if, the transaction commits), and each replica holds one connection
// that LISTENs on it and ends its cache's entries at each one.
//
// The bound: an assignment committed on another replica is served here
// once its notification arrives, the time of one message from the
// database (under a millisecond on a LAN). A device's next check-in
// comes a poll interval later. While the listening connection is down,
// or not yet up, the cache is suspended and every check-in reads the
// assignment; a connection that stops answering without closing is
// found by a ping after listenCheck of silence.
const assignChannel = "rampart_assignments"

// listenCheck is how long the listener waits for a notification before
// it pings its connection; listenRetry bounds the wait between its
// attempts to connect again.
const (
	listenCheck = 10 * time.Second
	listenRetry = 5 * time.Second
)

// assignmentsChanged marks the transaction c is in as one that wrote
// the assignments table: this replica's cache moves on once it commits
// or rolls back, and the others' once its notification arrives.
// PostgreSQL sends one notification per transaction for identical ones,
// and none for a savepoint rolled back, so this runs at every write.
func (c *conn) assignmentsChanged(ctx context.Context) error {
	if c.wrote != nil {
		*c.wrote = true
	}
	_, err := c.q.Exec(ctx, `SELECT pg_notify($1, '')`, assignChannel)
	return err
}

// listener is the state of a DB's listening connection.
type listener struct {
	stop context.CancelFunc
	done chan struct{}
	// pid is the listening connection's server process while it
	// listens, else 0 (tests end it to cut the connection).
	pid atomic.Uint32
}

// listen keeps a connection configured as cfg listening on
// assignChannel, and tells cache: Changed at each notification,
// Suspend whenever the connection is lost, Resume once it listens
// again. It returns when ctx ends.
func (l *listener) listen(ctx context.Context, cfg *pgx.ConnConfig, cache *assigncache.Cache) {
	defer close(l.done)
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			if _, err = c.Exec(ctx, `LISTEN `+assignChannel); err == nil {
				retry = 100 * time.Millisecond
				l.pid.Store(c.PgConn().PID())
				cache.Resume()
				l.wait(ctx, c, cache)
				l.pid.Store(0)
				cache.Suspend()
			}
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			c.Close(closeCtx)
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
		retry = min(2*retry, listenRetry)
	}
}

// wait reports c's notifications to cache until c fails or ctx ends.
func (l *listener) wait(ctx context.Context, c *pgx.Conn, cache *assigncache.Cache) {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		_, err := c.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			cache.Changed()
			continue
		case ctx.Err() != nil:
			return
		case pgconn.Timeout(err):
			// Silence: the connection answers a ping, or is lost.
			pctx, cancel := context.WithTimeout(ctx, listenRetry)
			err = c.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		return
	}
}

// close stops the listener and waits for it.
func (l *listener) close() {
	l.stop()
	<-l.done
}
