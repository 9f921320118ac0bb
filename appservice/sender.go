// Package appservice is the hub's side of the Matrix Application Service API: the durable per-appservice
// transaction sender that pushes room events to appservices, and the host that runs mautrix-go bridgev2 bridges
// in-process (each with its own registration, database and appservice router mounted on the hub's mux).
//
// It imports the homeserver's services (rooms, mxerr) and registration, and bridgev2 for hosting; it must not
// import hub or any bridge (bridges are handed in as bridgev2.NetworkConnector values), and the homeserver must
// never import it.
package appservice

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/appservice/upgrades"
	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/mxerr"
	"github.com/passerelle/passerelle/homeserver/rooms"
	"github.com/passerelle/passerelle/registration"
)

// EventSource is the part of the homeserver the sender reads from. *rooms.Service satisfies it.
type EventSource interface {
	// EventsAfter returns up to limit events with a stream position greater than after, in stream order.
	EventsAfter(ctx context.Context, after int64, limit int) ([]*rooms.Event, error)
	// MaxStreamPos returns the newest stream position (where a newly seen appservice starts).
	MaxStreamPos(ctx context.Context) (int64, error)
	// Members returns the room's current m.room.member events.
	Members(ctx context.Context, roomID id.RoomID) ([]*rooms.Event, error)
	// StateEvent returns a current state event, or an mxerr.NotFound error.
	StateEvent(ctx context.Context, roomID id.RoomID, evType, stateKey string) (*rooms.Event, error)
	// Subscribe registers fn to be called once per persisted event; fn must not block.
	Subscribe(fn func(*rooms.Event))
}

var _ EventSource = (*rooms.Service)(nil)

const (
	// maxTxnEvents is the most events one transaction carries (the limit; Synapse uses 100 too).
	maxTxnEvents = 100
	// firstRetryDelay is the wait after the first failed attempt; it doubles up to the configured cap.
	firstRetryDelay = time.Second
	// defaultMaxRetry is the cap when the config leaves max_retry_interval at zero.
	defaultMaxRetry = 5 * time.Minute
	// safetyTick wakes an idle worker now and then in case a wake-up was missed (e.g. events written by
	// another process sharing a PostgreSQL database); normally workers are woken by rooms.Subscribe.
	safetyTick = 30 * time.Second
	// sendTimeout bounds one PUT: the appservice answers only after it has queued the events, which can take a
	// while under load, but a hung appservice must not stall its queue forever.
	sendTimeout = 90 * time.Second
)

// Sender pushes events to every appservice with a URL, one worker per appservice, each with its own durable
// stream position and at most one persisted in-flight transaction.
type Sender struct {
	db       *dbutil.Database
	src      EventSource
	client   *http.Client
	maxRetry time.Duration
	log      zerolog.Logger
	workers  []*worker

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// worker is the queue of one appservice.
type worker struct {
	s    *Sender
	reg  *registration.Registration
	wake chan struct{}
	log  zerolog.Logger

	statusMu sync.Mutex
	status   SenderStatus
}

// SenderStatus describes one appservice's queue for the admin API and for tests.
type SenderStatus struct {
	ID string `json:"id"`
	// StreamPos is the last stream position the appservice acknowledged.
	StreamPos int64 `json:"stream_pos"`
	// PendingTxn is the transaction being delivered ("" when none).
	PendingTxn string `json:"pending_txn,omitempty"`
	// Failures counts consecutive failed attempts of the pending transaction.
	Failures int `json:"failures"`
	// LastError is the error of the last failed attempt ("" after a success).
	LastError string `json:"last_error,omitempty"`
	// Delivered counts transactions acknowledged since start.
	Delivered int64 `json:"delivered"`
}

// NewSender runs the sender's migrations (version table "appservice_version") on the homeserver database,
// and prepares one worker per registration that has a URL (a registration without a URL receives nothing,
// as in Synapse). Workers do nothing until Start. client carries the PUTs; an in-process bridge's client may
// route to a handler without TCP.
func NewSender(ctx context.Context, db *dbutil.Database, src EventSource, regs []*registration.Registration,
	client *http.Client, cfg configs.Appservices, log zerolog.Logger) (*Sender, error) {
	child := db.Child("appservice_version", upgrades.Table, dbutil.ZeroLogger(log))
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade appservice database: %w", err)
	}
	if client == nil {
		client = &http.Client{}
	}
	s := &Sender{db: child, src: src, client: client, maxRetry: cfg.MaxRetryInterval, log: log}
	if s.maxRetry <= 0 {
		s.maxRetry = defaultMaxRetry
	}
	for _, reg := range regs {
		if reg.URL == "" {
			continue
		}
		w := &worker{
			s:    s,
			reg:  reg,
			wake: make(chan struct{}, 1),
			log:  log.With().Str("appservice_id", reg.ID).Logger(),
		}
		w.status.ID = reg.ID
		s.workers = append(s.workers, w)
	}
	src.Subscribe(s.wakeAll)
	return s, nil
}

// wakeAll nudges every worker without blocking (the buffered channel keeps at most one pending wake-up).
func (s *Sender) wakeAll(*rooms.Event) {
	for _, w := range s.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Start launches the workers. Each first resends its persisted transaction, if any, then follows the stream.
// A newly seen appservice starts at the current end of the stream (no history replay).
func (s *Sender) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return errors.New("appservice sender already started")
	}
	for _, w := range s.workers {
		if err := w.init(ctx); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for _, w := range s.workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run(ctx)
		}()
	}
	return nil
}

// Stop ends the workers and waits for them. A transaction in flight is abandoned (it stays persisted and is
// resent with the same ID on the next start).
func (s *Sender) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	s.mu.Lock()
	s.cancel = nil
	s.mu.Unlock()
}

// Status returns a snapshot of every worker's queue.
func (s *Sender) Status() []SenderStatus {
	out := make([]SenderStatus, 0, len(s.workers))
	for _, w := range s.workers {
		w.statusMu.Lock()
		out = append(out, w.status)
		w.statusMu.Unlock()
	}
	return out
}

// init creates the appservice's stream row at the current end of the stream if it has none.
func (w *worker) init(ctx context.Context) error {
	maxPos, err := w.s.src.MaxStreamPos(ctx)
	if err != nil {
		return fmt.Errorf("appservice %s: read stream position: %w", w.reg.ID, err)
	}
	_, err = w.s.db.Exec(ctx,
		`INSERT INTO appservice_stream (as_id, stream_pos, next_txn) VALUES ($1, $2, 1) ON CONFLICT (as_id) DO NOTHING`,
		w.reg.ID, maxPos)
	if err != nil {
		return fmt.Errorf("appservice %s: create stream position: %w", w.reg.ID, err)
	}
	pos, _, err := w.position(ctx)
	if err != nil {
		return err
	}
	w.setStatus(func(st *SenderStatus) { st.StreamPos = pos })
	return nil
}

// pendingTxn is a persisted transaction.
type pendingTxn struct {
	id     string
	upTo   int64
	events int
	body   []byte
}

func (w *worker) position(ctx context.Context) (pos, nextTxn int64, err error) {
	err = w.s.db.QueryRow(ctx, `SELECT stream_pos, next_txn FROM appservice_stream WHERE as_id = $1`, w.reg.ID).
		Scan(&pos, &nextTxn)
	if err != nil {
		return 0, 0, fmt.Errorf("appservice %s: read stream position: %w", w.reg.ID, err)
	}
	return pos, nextTxn, nil
}

func (w *worker) pending(ctx context.Context) (*pendingTxn, error) {
	var (
		txnID int64
		p     pendingTxn
		body  string
	)
	err := w.s.db.QueryRow(ctx, `SELECT txn_id, up_to, events, body FROM appservice_txn WHERE as_id = $1`, w.reg.ID).
		Scan(&txnID, &p.upTo, &p.events, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("appservice %s: read pending transaction: %w", w.reg.ID, err)
	}
	p.id = strconv.FormatInt(txnID, 10)
	p.body = []byte(body)
	return &p, nil
}

// run is the worker loop: deliver the pending transaction (with backoff) or build the next one, else sleep
// until woken.
func (w *worker) run(ctx context.Context) {
	w.log.Debug().Msg("Appservice sender started")
	tick := time.NewTicker(safetyTick)
	defer tick.Stop()
	for ctx.Err() == nil {
		txn, idle, err := w.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Database trouble: wait a little and try again rather than spin.
			w.log.Err(err).Msg("Appservice sender could not read its queue")
			if !sleep(ctx, firstRetryDelay*5) {
				return
			}
			continue
		}
		if txn != nil {
			if !w.deliver(ctx, txn) {
				return
			}
			continue
		}
		if !idle {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-tick.C:
		}
	}
}

// next returns the persisted transaction, or builds, persists and returns a new one. idle is true when the
// appservice is up to date with the stream.
func (w *worker) next(ctx context.Context) (txn *pendingTxn, idle bool, err error) {
	if txn, err = w.pending(ctx); err != nil || txn != nil {
		return txn, false, err
	}
	pos, nextTxn, err := w.position(ctx)
	if err != nil {
		return nil, false, err
	}
	evs, upTo, err := w.collect(ctx, pos)
	if err != nil {
		return nil, false, err
	}
	if upTo == pos {
		return nil, true, nil
	}
	if len(evs) == 0 {
		// Events happened, none for this appservice: just move past them.
		if _, err := w.s.db.Exec(ctx, `UPDATE appservice_stream SET stream_pos = $2 WHERE as_id = $1`, w.reg.ID, upTo); err != nil {
			return nil, false, fmt.Errorf("appservice %s: advance stream position: %w", w.reg.ID, err)
		}
		w.setStatus(func(st *SenderStatus) { st.StreamPos = upTo })
		return nil, false, nil
	}
	body, err := json.Marshal(transactionBody{Events: evs})
	if err != nil {
		return nil, false, fmt.Errorf("appservice %s: encode transaction: %w", w.reg.ID, err)
	}
	txn = &pendingTxn{id: strconv.FormatInt(nextTxn, 10), upTo: upTo, events: len(evs), body: body}
	err = w.s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := w.s.db.Exec(ctx,
			`INSERT INTO appservice_txn (as_id, txn_id, up_to, events, body) VALUES ($1, $2, $3, $4, $5)`,
			w.reg.ID, nextTxn, upTo, len(evs), string(body)); err != nil {
			return err
		}
		_, err := w.s.db.Exec(ctx, `UPDATE appservice_stream SET next_txn = $2 WHERE as_id = $1`, w.reg.ID, nextTxn+1)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("appservice %s: persist transaction %s: %w", w.reg.ID, txn.id, err)
	}
	return txn, false, nil
}

// transactionBody is the JSON of PUT /_matrix/app/v1/transactions/{txnId}.
type transactionBody struct {
	Events []json.RawMessage `json:"events"`
}

// collect reads the stream after pos and returns up to maxTxnEvents events the appservice is interested in, in
// client format, and the stream position the batch covers (pos when the stream has nothing new).
func (w *worker) collect(ctx context.Context, pos int64) ([]json.RawMessage, int64, error) {
	var out []json.RawMessage
	rooms := make(map[id.RoomID]bool)
	for len(out) < maxTxnEvents {
		batch, err := w.s.src.EventsAfter(ctx, pos, maxTxnEvents)
		if err != nil {
			return nil, 0, fmt.Errorf("appservice %s: read events after %d: %w", w.reg.ID, pos, err)
		}
		for _, ev := range batch {
			ok, err := w.interested(ctx, ev, rooms)
			if err != nil {
				return nil, 0, err
			}
			if ok {
				out = append(out, ev.MarshalClient())
			}
			pos = ev.StreamPos
			if len(out) == maxTxnEvents {
				break
			}
		}
		if len(batch) < maxTxnEvents {
			break
		}
	}
	return out, pos, nil
}

// interested applies the spec's rules: the sender or (for member events) the target is in the appservice's
// user namespace; the room ID or its canonical alias matches; or one of the room's joined members is in the
// user namespace. Room-level answers are cached for one batch.
func (w *worker) interested(ctx context.Context, ev *rooms.Event, cache map[id.RoomID]bool) (bool, error) {
	if w.reg.IsInterestedUser(ev.Sender) {
		return true, nil
	}
	if ev.Type == event.StateMember.Type && ev.StateKey != nil && w.reg.IsInterestedUser(id.UserID(*ev.StateKey)) {
		return true, nil
	}
	if ok, seen := cache[ev.RoomID]; seen {
		return ok, nil
	}
	ok, err := w.interestedInRoom(ctx, ev.RoomID)
	if err != nil {
		return false, err
	}
	cache[ev.RoomID] = ok
	return ok, nil
}

func (w *worker) interestedInRoom(ctx context.Context, roomID id.RoomID) (bool, error) {
	if w.reg.MatchesRoom(roomID) {
		return true, nil
	}
	if len(w.reg.Namespaces.RoomAliases) > 0 {
		ev, err := w.s.src.StateEvent(ctx, roomID, event.StateCanonicalAlias.Type, "")
		if err != nil && !errors.Is(err, mxerr.NotFound("")) {
			return false, fmt.Errorf("appservice %s: read canonical alias of %s: %w", w.reg.ID, roomID, err)
		}
		if ev != nil {
			var c struct {
				Alias      id.RoomAlias   `json:"alias"`
				AltAliases []id.RoomAlias `json:"alt_aliases"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			for _, a := range append(c.AltAliases, c.Alias) {
				if w.reg.MatchesAlias(a) {
					return true, nil
				}
			}
		}
	}
	members, err := w.s.src.Members(ctx, roomID)
	if err != nil {
		return false, fmt.Errorf("appservice %s: read members of %s: %w", w.reg.ID, roomID, err)
	}
	for _, m := range members {
		if m.StateKey != nil && m.Membership() == string(event.MembershipJoin) && w.reg.IsInterestedUser(id.UserID(*m.StateKey)) {
			return true, nil
		}
	}
	return false, nil
}

// deliver sends txn until the appservice acknowledges it or ctx ends, then deletes it and advances the stream
// position in one database transaction. It returns false when ctx ended.
func (w *worker) deliver(ctx context.Context, txn *pendingTxn) bool {
	log := w.log.With().Str("txn_id", txn.id).Int("events", txn.events).Logger()
	w.setStatus(func(st *SenderStatus) { st.PendingTxn = txn.id })
	for attempt := 1; ; attempt++ {
		err := w.put(ctx, txn)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		delay := retryDelay(attempt, w.s.maxRetry)
		w.setStatus(func(st *SenderStatus) { st.Failures = attempt; st.LastError = err.Error() })
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", delay).Msg("Appservice transaction failed")
		if !sleep(ctx, delay) {
			return false
		}
	}
	for {
		err := w.s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
			if _, err := w.s.db.Exec(ctx, `DELETE FROM appservice_txn WHERE as_id = $1`, w.reg.ID); err != nil {
				return err
			}
			_, err := w.s.db.Exec(ctx, `UPDATE appservice_stream SET stream_pos = $2 WHERE as_id = $1`, w.reg.ID, txn.upTo)
			return err
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		// The appservice has the events; resending them after a database hiccup is harmless (same txn ID).
		log.Err(err).Msg("Could not record an acknowledged appservice transaction")
		if !sleep(ctx, firstRetryDelay) {
			return false
		}
	}
	log.Debug().Msg("Appservice transaction delivered")
	w.setStatus(func(st *SenderStatus) {
		st.StreamPos, st.PendingTxn, st.Failures, st.LastError = txn.upTo, "", 0, ""
		st.Delivered++
	})
	return true
}

// put makes one PUT attempt; any non-2xx answer is a failure (the spec asks homeservers to retry).
func (w *worker) put(ctx context.Context, txn *pendingTxn) error {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	u := strings.TrimRight(w.reg.URL, "/") + "/_matrix/app/v1/transactions/" + url.PathEscape(txn.id)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(txn.body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+w.reg.ServerToken)
	resp, err := w.s.client.Do(req)
	if err != nil {
		return fmt.Errorf("put transaction: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("put transaction: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
	}
	return nil
}

func (w *worker) setStatus(fn func(*SenderStatus)) {
	w.statusMu.Lock()
	fn(&w.status)
	w.statusMu.Unlock()
}

// retryDelay is the wait after the attempt-th consecutive failure: 1 s, 2 s, 4 s … capped at maxDelay.
func retryDelay(attempt int, maxDelay time.Duration) time.Duration {
	d := firstRetryDelay
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// sleep waits for d or ctx; it reports whether the full wait happened.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
