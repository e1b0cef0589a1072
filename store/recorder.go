package store

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
)

// RecorderOptions configure a Recorder; zero values take the defaults noted.
type RecorderOptions struct {
	BufferSize int           // samples held in memory at most; default 100,000
	BatchSize  int           // samples per COPY at most; default 5,000
	FlushEvery time.Duration // default 200 ms
	// Retention is how long samples are kept; default 7 days, negative keeps them forever.
	Retention      time.Duration
	RetentionEvery time.Duration // how often old samples are deleted; default 1 h
	Clock          clock.WithTicker
	Log            *slog.Logger
	Registry       prometheus.Registerer // nil: no metrics
}

// Stats are a recorder's counts since it started. Every sample added ends in exactly one of
// Recorded, Invalid, DroppedFull or DroppedShutdown, or is still Buffered.
type Stats struct {
	Added           int64
	Recorded        int64
	Invalid         int64
	DroppedFull     int64 // the oldest samples, pushed out of a full buffer
	DroppedShutdown int64 // left unwritten when Close's deadline passed
	Buffered        int64
	WriteErrors     int64
}

// Recorder keeps request samples in a bounded buffer and writes them to Postgres in the
// background. Add never blocks and never fails; when the database is slow or away the buffer
// fills, the oldest samples are dropped and counted, and writing resumes when it returns.
// Samples of refused requests hold half the buffer at most; past that, new ones are dropped.
type Recorder struct {
	db   *pgxpool.Pool
	opts RecorderOptions

	mu   sync.Mutex
	ring []Sample
	head int // index of the oldest sample
	n    int // samples in the ring
	// refused counts the ring's samples of refused requests, which may fill half of it at
	// most: a burst of shedding never pushes out the samples the trainer learns from.
	refused int
	stats   Stats
	kick    chan struct{}
	closed  bool
	started bool // Run was called

	stop     chan struct{}
	done     chan struct{}
	inflight int // samples taken from the ring and not yet written or dropped
	metrics  *recorderMetrics
}

type recorderMetrics struct {
	samples  *prometheus.CounterVec
	buffered prometheus.GaugeFunc
	errors   prometheus.Counter
}

// NewRecorder returns a recorder writing to db. Start it with Run.
func NewRecorder(db *pgxpool.Pool, opts RecorderOptions) *Recorder {
	if opts.BufferSize <= 0 {
		opts.BufferSize = 100_000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 5_000
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 200 * time.Millisecond
	}
	if opts.Retention == 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.RetentionEvery <= 0 {
		opts.RetentionEvery = time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	r := &Recorder{db: db, opts: opts, ring: make([]Sample, opts.BufferSize), kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	if opts.Registry != nil {
		r.metrics = &recorderMetrics{
			samples: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "augur_samples_total",
				Help: "Request samples handed to the recorder, by result: recorded, invalid, dropped_full, dropped_shutdown.",
			}, []string{"result"}),
			buffered: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "augur_recorder_buffered_samples", Help: "Samples waiting in memory to be written.",
			}, func() float64 { return float64(r.Stats().Buffered) }),
			errors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "augur_recorder_write_errors_total", Help: "Failed attempts to write a batch of samples.",
			}),
		}
		opts.Registry.MustRegister(r.metrics.samples, r.metrics.buffered, r.metrics.errors)
	}
	return r
}

func (r *Recorder) count(result string, n int64) {
	if r.metrics != nil && n > 0 {
		r.metrics.samples.WithLabelValues(result).Add(float64(n))
	}
}

// Add hands a sample to the recorder. It validates the sample (an invalid one is counted and
// discarded) and returns at once.
func (r *Recorder) Add(s Sample) {
	if err := s.Validate(); err != nil {
		r.mu.Lock()
		r.stats.Added++
		r.stats.Invalid++
		r.mu.Unlock()
		r.count("invalid", 1)
		r.opts.Log.Debug("sample rejected", "request_id", s.RequestID, "err", err)
		return
	}
	r.mu.Lock()
	r.stats.Added++
	if r.closed {
		r.stats.DroppedShutdown++
		r.mu.Unlock()
		r.count("dropped_shutdown", 1)
		return
	}
	if s.Refused && r.refused >= len(r.ring)/2 {
		r.stats.DroppedFull++
		r.mu.Unlock()
		r.count("dropped_full", 1)
		return
	}
	dropped := false
	if r.n == len(r.ring) {
		if r.ring[r.head].Refused {
			r.refused--
		}
		r.ring[r.head] = Sample{}
		r.head = (r.head + 1) % len(r.ring)
		r.n--
		r.stats.DroppedFull++
		dropped = true
	}
	r.ring[(r.head+r.n)%len(r.ring)] = s
	r.n++
	if s.Refused {
		r.refused++
	}
	full := r.n >= r.opts.BatchSize
	r.mu.Unlock()
	if dropped {
		r.count("dropped_full", 1)
	}
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// take removes up to max of the oldest samples from the buffer into dst.
func (r *Recorder) take(dst []Sample, max int) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := min(max, r.n)
	for i := range k {
		j := (r.head + i) % len(r.ring)
		dst = append(dst, r.ring[j])
		if r.ring[j].Refused {
			r.refused--
		}
		r.ring[j] = Sample{}
	}
	r.head = (r.head + k) % len(r.ring)
	r.n -= k
	r.inflight += k
	return dst
}

func (r *Recorder) settle(n int, recorded bool) {
	r.mu.Lock()
	r.inflight -= n
	if recorded {
		r.stats.Recorded += int64(n)
	} else {
		r.stats.DroppedShutdown += int64(n)
	}
	r.mu.Unlock()
	if recorded {
		r.count("recorded", int64(n))
	} else {
		r.count("dropped_shutdown", int64(n))
	}
}

// Stats returns the recorder's counts.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Buffered = int64(r.n + r.inflight)
	return s
}

// Run writes samples until Close. It also deletes samples past the retention period.
func (r *Recorder) Run() {
	r.mu.Lock()
	if r.closed || r.started {
		r.mu.Unlock()
		return
	}
	r.started = true
	r.mu.Unlock()
	defer close(r.done)
	flush := r.opts.Clock.NewTicker(r.opts.FlushEvery)
	defer flush.Stop()
	report := r.opts.Clock.NewTicker(30 * time.Second)
	defer report.Stop()
	var lastDropped int64
	batch := make([]Sample, 0, r.opts.BatchSize)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); <-r.stop; cancel() }()
	go func() { // retention runs beside the writer so a slow delete never holds up samples
		defer wg.Done()
		retain := r.opts.Clock.NewTicker(r.opts.RetentionEvery)
		defer retain.Stop()
		for {
			r.retain(ctx)
			select {
			case <-ctx.Done():
				return
			case <-retain.C():
			}
		}
	}()
	for {
		select {
		case <-r.stop:
			return
		case <-flush.C():
		case <-r.kick:
		case <-report.C():
			if s := r.Stats(); s.DroppedFull != lastDropped {
				r.opts.Log.Warn("samples dropped: the recorder's buffer was full", "dropped_total", s.DroppedFull, "recorded_total", s.Recorded)
				lastDropped = s.DroppedFull
			}
			continue
		}
		for {
			batch = r.take(batch[:0], r.opts.BatchSize)
			if len(batch) == 0 {
				break
			}
			if !r.writeRetrying(ctx, batch) {
				// Stopping: hand the batch back so Close can try once more.
				r.giveBack(batch)
				return
			}
		}
	}
}

// writeRetrying writes a batch, retrying with backoff while the database is away. It reports
// false only when the recorder is stopping.
func (r *Recorder) writeRetrying(ctx context.Context, batch []Sample) bool {
	// The delays come from wait.Backoff, the waiting from the injected clock, so tests can
	// step through an outage.
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 5 * time.Second, Steps: math.MaxInt32}.DelayFunc()
	logged := false
	for {
		err := WriteSamples(ctx, r.db, batch)
		if err == nil {
			r.settle(len(batch), true)
			if logged {
				r.opts.Log.Info("sample writes resumed")
			}
			return true
		}
		if refused(err) {
			// The database refused the data, not the connection: retrying the same rows
			// would stall recording for good. Split the batch to keep every good row.
			if len(batch) == 1 {
				r.mu.Lock()
				r.inflight--
				r.stats.Invalid++
				r.mu.Unlock()
				r.count("invalid", 1)
				r.opts.Log.Warn("sample refused by the database", "request_id", batch[0].RequestID, "err", err)
				return true
			}
			half := len(batch) / 2
			return r.writeRetrying(ctx, batch[:half]) && r.writeRetrying(ctx, batch[half:])
		}
		r.mu.Lock()
		r.stats.WriteErrors++
		r.mu.Unlock()
		if r.metrics != nil {
			r.metrics.errors.Inc()
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			return false
		}
		if !logged {
			r.opts.Log.Warn("cannot write samples; retrying", "err", err, "batch", len(batch))
			logged = true
		}
		select {
		case <-r.stop:
			return false
		case <-r.opts.Clock.After(backoff()):
		}
	}
}

// refused reports whether Postgres rejected the rows themselves (data exceptions, integrity
// violations) rather than failing to take them.
func refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// giveBack returns an unwritten batch to the front of the buffer.
func (r *Recorder) giveBack(batch []Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight -= len(batch)
	for i := len(batch) - 1; i >= 0; i-- {
		if r.n == len(r.ring) {
			r.stats.DroppedShutdown++
			r.count("dropped_shutdown", 1)
			continue
		}
		r.head = (r.head - 1 + len(r.ring)) % len(r.ring)
		r.ring[r.head] = batch[i]
		r.n++
		if batch[i].Refused {
			r.refused++
		}
	}
}

func (r *Recorder) retain(ctx context.Context) {
	if r.opts.Retention < 0 {
		return
	}
	n, err := DeleteOlderThan(ctx, r.db, r.opts.Clock.Now().Add(-r.opts.Retention))
	if err != nil {
		if ctx.Err() == nil {
			r.opts.Log.Warn("retention failed", "err", err)
		}
		return
	}
	if n > 0 {
		r.opts.Log.Info("old samples deleted", "rows", n, "retention", r.opts.Retention.String())
	}
}

// Close stops the writer and writes what is buffered, giving up at ctx's deadline; samples
// it could not write are counted as dropped. Add after Close counts samples as dropped.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	r.mu.Unlock()
	close(r.stop)
	if started {
		<-r.done
	}
	batch := make([]Sample, 0, r.opts.BatchSize)
	var err error
	for {
		batch = r.take(batch[:0], r.opts.BatchSize)
		if len(batch) == 0 {
			return err
		}
		if werr := WriteSamples(ctx, r.db, batch); werr != nil {
			r.settle(len(batch), false)
			err = werr
			continue // count the rest as dropped too, without waiting
		}
		r.settle(len(batch), true)
	}
}
