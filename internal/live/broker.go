// Package live fans accepted heartbeats out to GraphQL subscribers. Within one process it
// delivers directly; with PostgreSQL it also NOTIFYs the other replicas (batched, so the
// heartbeat path never waits on it) and LISTENs for theirs. Subscribers are keyed by tenant:
// an update is only ever offered to subscribers of the asset's own tenant. Each tenant's
// updates are read once, in a goroutine of the tenant's own, and the same asset goes to
// every subscriber it concerns.
package live

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
)

// Update names an asset that changed.
type Update struct {
	TenantID, SiteID, AssetID string
}

// Loader reads, for one tenant, the assets a batch of updates names. The broker calls it
// once per batch, however many subscribers the batch reaches, and hands every subscriber the
// same assets and the same shared value (the graph layer puts the batch's loaders there, so
// nested fields are read once too). It must scope its reads to tenantID.
type Loader func(ctx context.Context, tenantID string, assetIDs []string) (assets []*domain.Asset, shared any, err error)

// Delivery is one changed asset as read for all its subscribers.
type Delivery struct {
	Asset  *domain.Asset
	Shared any
}

const (
	channel       = "oneprotect_asset_updated"
	maxPayload    = 7000 // PostgreSQL's NOTIFY payload limit is 8000 bytes
	subscriberBuf = 64
	// maxPending bounds the distinct assets waiting to be read for one tenant; under a flood
	// an asset that changes again while waiting is read once, with its latest state.
	maxPending = 10_000
	// loadChunk bounds the ids of one read.
	loadChunk   = 500
	loadTimeout = 10 * time.Second
)

// Broker is the publish/subscribe hub.
type Broker struct {
	replica string
	log     *slog.Logger
	load    Loader

	mu      sync.Mutex
	feeds   map[string]*feed // tenant -> its subscribers and pending updates
	pending []Update         // to NOTIFY other replicas
	wake    chan struct{}
	dsn     string
	linked  atomic.Bool // Run is linking replicas: updates are queued for NOTIFY
}

// feed is one tenant's subscribers and the updates waiting to be read for them. A goroutine
// serves it while it has subscribers.
type feed struct {
	tenantID string
	subs     map[*subscription]struct{}
	pending  map[string]struct{} // asset ids
	wake     chan struct{}
	stop     chan struct{}
}

type subscription struct {
	siteID *string
	ch     chan Delivery
}

// NewBroker returns a broker; with a PostgreSQL dsn, Run also links it to other replicas.
func NewBroker(postgresDSN string, log *slog.Logger) *Broker {
	return &Broker{replica: ids.New(), log: log, feeds: map[string]*feed{},
		wake: make(chan struct{}, 1), dsn: postgresDSN}
}

// SetLoader installs how updates are read; it must be set before the first Subscribe.
func (b *Broker) SetLoader(l Loader) {
	b.mu.Lock()
	b.load = l
	b.mu.Unlock()
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

// deliver queues u for its tenant's feed, if the tenant has subscribers here. The read
// happens in the feed's goroutine, never on the heartbeat path.
func (b *Broker) deliver(u Update) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.feeds[u.TenantID]
	if f == nil || !f.wanted(u.SiteID) {
		return
	}
	if _, ok := f.pending[u.AssetID]; !ok && len(f.pending) >= maxPending {
		return // a flood: this update is dropped, as a slow subscriber's would be
	}
	f.pending[u.AssetID] = struct{}{}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// wanted reports whether some subscriber takes updates of siteID (b.mu held).
func (f *feed) wanted(siteID string) bool {
	for s := range f.subs {
		if s.siteID == nil || *s.siteID == siteID {
			return true
		}
	}
	return false
}

// Subscribe returns the updates of one tenant (optionally one site) until ctx ends.
func (b *Broker) Subscribe(ctx context.Context, tenantID string, siteID *string) <-chan Delivery {
	s := &subscription{siteID: siteID, ch: make(chan Delivery, subscriberBuf)}
	b.mu.Lock()
	f := b.feeds[tenantID]
	if f == nil {
		f = &feed{tenantID: tenantID, subs: map[*subscription]struct{}{}, pending: map[string]struct{}{},
			wake: make(chan struct{}, 1), stop: make(chan struct{})}
		b.feeds[tenantID] = f
		go b.serve(f)
	}
	f.subs[s] = struct{}{}
	b.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		delete(f.subs, s)
		if len(f.subs) == 0 {
			delete(b.feeds, tenantID)
			close(f.stop)
		}
		b.mu.Unlock()
	}()
	return s.ch
}

// serve reads a feed's pending updates, a batch at a time, and fans each asset out.
func (b *Broker) serve(f *feed) {
	for {
		select {
		case <-f.stop:
			return
		case <-f.wake:
		}
		b.mu.Lock()
		batch := make([]string, 0, len(f.pending))
		for id := range f.pending {
			batch = append(batch, id)
		}
		clear(f.pending)
		load := b.load
		b.mu.Unlock()
		if load == nil {
			continue
		}
		for len(batch) > 0 {
			n := min(len(batch), loadChunk)
			b.fanOut(f, load, batch[:n])
			batch = batch[n:]
		}
	}
}

func (b *Broker) fanOut(f *feed, load Loader, assetIDs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	assets, shared, err := load(ctx, f.tenantID, assetIDs)
	if err != nil {
		b.log.Warn("live updates: cannot read updated assets", "err", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range assets {
		if a == nil || a.TenantID != f.tenantID {
			continue // the loader is tenant-scoped; this is a second lock on the same door
		}
		d := Delivery{Asset: a, Shared: shared}
		for s := range f.subs {
			if s.siteID != nil && *s.siteID != a.SiteID {
				continue
			}
			select {
			case s.ch <- d:
			default: // a slow subscriber misses updates rather than slowing the others
			}
		}
	}
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
