// Package live fans accepted heartbeats out to GraphQL subscribers. Within one process it
// delivers directly; with PostgreSQL it also NOTIFYs the other replicas (batched, so the
// heartbeat path never waits on it) and LISTENs for theirs. Subscribers are keyed by tenant:
// an update is only ever offered to subscribers of the asset's own tenant.
package live

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oneprotect/telemetry/internal/ids"
)

// Update names an asset that changed.
type Update struct {
	TenantID, SiteID, AssetID string
}

const (
	channel       = "oneprotect_asset_updated"
	maxPayload    = 7000 // PostgreSQL's NOTIFY payload limit is 8000 bytes
	subscriberBuf = 256
)

// Broker is the publish/subscribe hub.
type Broker struct {
	replica string
	log     *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*subscription]struct{} // tenant -> subscriptions
	pending []Update                              // to NOTIFY other replicas
	wake    chan struct{}
	dsn     string
	linked  atomic.Bool // Run is linking replicas: updates are queued for NOTIFY
}

type subscription struct {
	siteID *string
	ch     chan Update
}

// NewBroker returns a broker; with a PostgreSQL dsn, Run also links it to other replicas.
func NewBroker(postgresDSN string, log *slog.Logger) *Broker {
	return &Broker{replica: ids.New(), log: log, subs: map[string]map[*subscription]struct{}{},
		wake: make(chan struct{}, 1), dsn: postgresDSN}
}

// AssetUpdated publishes an update (telemetry.Publisher). It never blocks.
func (b *Broker) AssetUpdated(tenantID, siteID, assetID string) {
	u := Update{TenantID: tenantID, SiteID: siteID, AssetID: assetID}
	b.deliver(u)
	if !b.linked.Load() {
		return
	}
	b.mu.Lock()
	if len(b.pending) < 100_000 {
		b.pending = append(b.pending, u)
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Broker) deliver(u Update) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs[u.TenantID] {
		if s.siteID != nil && *s.siteID != u.SiteID {
			continue
		}
		select {
		case s.ch <- u:
		default: // a slow subscriber misses updates rather than slowing heartbeats
		}
	}
}

// Subscribe returns the updates of one tenant (optionally one site) until ctx ends.
func (b *Broker) Subscribe(ctx context.Context, tenantID string, siteID *string) <-chan Update {
	s := &subscription{siteID: siteID, ch: make(chan Update, subscriberBuf)}
	b.mu.Lock()
	if b.subs[tenantID] == nil {
		b.subs[tenantID] = map[*subscription]struct{}{}
	}
	b.subs[tenantID][s] = struct{}{}
	b.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		delete(b.subs[tenantID], s)
		if len(b.subs[tenantID]) == 0 {
			delete(b.subs, tenantID)
		}
		b.mu.Unlock()
	}()
	return s.ch
}

// Run links replicas through PostgreSQL LISTEN/NOTIFY until ctx ends (no-op on SQLite).
func (b *Broker) Run(ctx context.Context) {
	if b.dsn == "" {
		return
	}
	b.linked.Store(true)
	defer b.linked.Store(false)
	go b.notifyLoop(ctx)
	for ctx.Err() == nil {
		if err := b.listen(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("live updates: LISTEN connection lost, retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (b *Broker) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		origin, body, ok := strings.Cut(n.Payload, "\n")
		if !ok || origin == b.replica {
			continue
		}
		for _, line := range strings.Split(body, "\n") {
			parts := strings.Split(line, " ")
			if len(parts) == 3 {
				b.deliver(Update{TenantID: parts[0], SiteID: parts[1], AssetID: parts[2]})
			}
		}
	}
}

// notifyLoop sends pending updates to the other replicas, a batch per NOTIFY. It sends as
// soon as it is woken, so a lone update travels at once; under load, what arrives while one
// NOTIFY is in flight goes out together in the next.
func (b *Broker) notifyLoop(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		b.mu.Unlock()
		for len(batch) > 0 {
			var sb strings.Builder
			sb.WriteString(b.replica)
			i := 0
			for ; i < len(batch) && sb.Len() < maxPayload; i++ {
				u := batch[i]
				sb.WriteString("\n" + u.TenantID + " " + u.SiteID + " " + u.AssetID)
			}
			batch = batch[i:]
			if conn == nil || conn.IsClosed() {
				c, err := pgx.Connect(ctx, b.dsn)
				if err != nil {
					b.log.Warn("live updates: cannot NOTIFY other replicas", "err", err)
					break
				}
				conn = c
			}
			if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", channel, sb.String()); err != nil {
				b.log.Warn("live updates: NOTIFY failed", "err", err)
				conn.Close(context.Background())
				conn = nil
			}
		}
	}
}
