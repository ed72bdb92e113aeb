package store

import (
	"context"
	"database/sql"
	"sync"
)

// preparedTx runs statements of a *sql.Tx through statements prepared once on the writer
// pool, so SQLite parses each hot-path statement once per process instead of once per call;
// a statement that was not prepared runs as is. Queries must already be rebound to the
// driver's placeholders.
type preparedTx struct {
	tx    *sql.Tx
	cache *stmtCache
	bound map[*sql.Stmt]*sql.Stmt // the cache's statements bound to tx, made once per tx
}

// stmt returns query's prepared statement bound to the transaction, or nil.
func (p *preparedTx) stmt(ctx context.Context, query string) *sql.Stmt {
	st := p.cache.get(query)
	if st == nil {
		return nil
	}
	if b, ok := p.bound[st]; ok {
		return b
	}
	if p.bound == nil {
		p.bound = make(map[*sql.Stmt]*sql.Stmt, 8)
	}
	b := p.tx.StmtContext(ctx, st)
	p.bound[st] = b
	return b
}

type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// prepare prepares the statements once, at startup: on SQLite the writer pool has a single
// connection, which a transaction holds, so nothing may be prepared on the pool later.
func (c *stmtCache) prepare(ctx context.Context, queries ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	for _, q := range queries {
		if _, ok := c.m[q]; ok {
			continue
		}
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		c.m[q] = st
	}
	return nil
}

func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[query]
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

func (p *preparedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.tx.ExecContext(ctx, query, args...)
}

func (p *preparedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.tx.QueryRowContext(ctx, query, args...)
}

func (p *preparedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.tx.QueryContext(ctx, query, args...)
}
