package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rampartfw/rampart/internal/store"
)

// unavailable marks err with store.ErrUnavailable when it says the
// database could not be reached or the connection to it broke, rather
// than that the statement failed: the server answers such a failure 503
// with Retry-After (the client may retry; nothing was committed, since
// a transaction whose connection breaks is rolled back by PostgreSQL),
// not 500. Other errors, and nil, are returned unchanged.
func unavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !isUnavailable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

func isUnavailable(err error) bool {
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08": // connection exception
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutting down, crash, cannot connect now
			return true
		case pe.Code == "53300": // too many connections
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	// A net.Error includes a deadline that passed while the database did
	// not answer (context.DeadlineExceeded is one): a database that hangs
	// is unavailable too. A caller that went away (context.Canceled) is
	// not the database's failure.
	var ne net.Error
	switch {
	case errors.As(err, &ne), errors.Is(err, net.ErrClosed), errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	// A statement that was never sent (the connection was found broken
	// first) is one pgx knows it may retry.
	return pgconn.SafeToRetry(err)
}

// classified wraps a querier so that its errors say when the database is
// unavailable (unavailable).
type classified struct{ q querier }

func (c classified) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := c.q.Exec(ctx, sql, args...)
	return tag, unavailable(err)
}

func (c classified) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := c.q.Query(ctx, sql, args...)
	if err != nil {
		return rows, unavailable(err)
	}
	return classifiedRows{rows}, nil
}

func (c classified) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return classifiedRow{c.q.QueryRow(ctx, sql, args...)}
}

type classifiedRows struct{ pgx.Rows }

func (r classifiedRows) Err() error             { return unavailable(r.Rows.Err()) }
func (r classifiedRows) Scan(dest ...any) error { return unavailable(r.Rows.Scan(dest...)) }
func (r classifiedRows) Values() ([]any, error) {
	v, err := r.Rows.Values()
	return v, unavailable(err)
}
func (r classifiedRows) Conn() *pgx.Conn { return r.Rows.Conn() }
func (r classifiedRows) FieldDescriptions() []pgconn.FieldDescription {
	return r.Rows.FieldDescriptions()
}

type classifiedRow struct{ r pgx.Row }

func (r classifiedRow) Scan(dest ...any) error { return unavailable(r.r.Scan(dest...)) }
