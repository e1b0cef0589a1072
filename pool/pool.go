package pool

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// Endpoint describes one replica as configured.
type Endpoint struct {
	// Name identifies the replica in logs, metrics and samples.
	Name string `json:"name"`
	// Address is the ip:port the gateway sends requests to.
	Address string `json:"address"`
	// MetricsURL is where its Prometheus metrics are scraped; default http://Address/metrics.
	MetricsURL string `json:"metricsURL,omitempty"`
	// Class names the replica's hardware/model class (e.g. "8b-h100"), a feature for prediction.
	Class string `json:"class,omitempty"`
	// Models lists the model names the replica serves. When empty the scraper discovers them
	// from the replica's OpenAI /v1/models.
	Models []string `json:"models,omitempty"`
}

// Equal reports whether e and o configure the same replica.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Name == o.Name && e.Address == o.Address && e.MetricsURL == o.MetricsURL &&
		e.Class == o.Class && slices.Equal(e.Models, o.Models)
}

func (e Endpoint) metricsURL() string {
	if e.MetricsURL != "" {
		return e.MetricsURL
	}
	return "http://" + e.Address + "/metrics"
}

// Validate reports a configuration error in e.
func (e Endpoint) Validate() error {
	if e.Name == "" {
		return fmt.Errorf("endpoint %q: name is empty", e.Address)
	}
	host, port, err := net.SplitHostPort(e.Address)
	if err != nil || port == "" {
		return fmt.Errorf("endpoint %q: address %q is not ip:port", e.Name, e.Address)
	}
	if net.ParseIP(host) == nil {
		// The gateway's original-destination routing needs an IP literal, not a host name.
		return fmt.Errorf("endpoint %q: address %q must be an IP literal with a port", e.Name, e.Address)
	}
	for _, m := range e.Models {
		if m == "" {
			return fmt.Errorf("endpoint %q: empty model name", e.Name)
		}
	}
	return nil
}

// Metrics is one scrape of a replica's vLLM metrics.
type Metrics struct {
	Running      int
	Waiting      int
	KVUsage      float64 // 0..1
	BlockSize    int     // from vllm:cache_config_info, 0 when not reported
	NumGPUBlocks int     // from vllm:cache_config_info, 0 when not reported
	// Counters, as scraped (monotonic until the server restarts).
	PrefixQueries float64
	PrefixHits    float64
	Preemptions   float64
	// ScrapedAt is when the scrape completed, on the pool's clock.
	ScrapedAt time.Time
	// Counts are the picker's counts for the replica when the scrape began: Load.Counts
	// less these is what the metrics cannot show yet.
	Counts Counts
}

// Replica is the live state of one endpoint. It is safe for concurrent use.
//
// A replica's identity is its Name: the pool keeps the same *Replica for a name across
// membership updates, so an endpoint whose address or class changes keeps its metrics, its
// in-flight accounting, and what scheduling plugins learned about it.
type Replica struct {
	Name     string
	endpoint atomic.Pointer[Endpoint]
	metrics  atomic.Pointer[Metrics]
	failing  atomic.Bool // last scrape failed
	models   atomic.Pointer[modelState]
	// scrapeStarted numbers scrapes as they start; scrapeApplied is the number of the latest
	// one whose result was recorded. A scrape that finishes after a later one (a periodic
	// scrape begun before a crash, overtaken by the probe that found the crash) is dropped.
	scrapeStarted, scrapeApplied atomic.Int64

	load inflight
}

// NewReplica returns a replica for e outside any pool, for tests and tools.
func NewReplica(e Endpoint) *Replica {
	e.Models = slices.Sorted(slices.Values(e.Models)) // sorted once: the request path asks per replica
	r := &Replica{Name: e.Name}
	r.endpoint.Store(&e)
	return r
}

// Endpoint returns the replica's current configuration.
func (r *Replica) Endpoint() Endpoint { return *r.endpoint.Load() }

// Address returns the ip:port the gateway sends the replica's requests to.
func (r *Replica) Address() string { return r.endpoint.Load().Address }

// Metrics returns the latest successful scrape, if any.
func (r *Replica) Metrics() (Metrics, bool) {
	m := r.metrics.Load()
	if m == nil {
		return Metrics{}, false
	}
	return *m, true
}

// SetMetrics records a scrape. The simulator's virtual scraper calls it too.
// It stamps m with the picker's counts now.
func (r *Replica) SetMetrics(m Metrics) {
	m.Counts = r.counts()
	r.metrics.Store(&m)
	r.failing.Store(false)
}

// ScrapeFailed records that a scrape did not succeed: the replica is out of rotation until a
// scrape succeeds. The last metrics stay, for inspection.
func (r *Replica) ScrapeFailed() { r.failing.Store(true) }

// claimResult reports whether the result of scrape number seq may be recorded: no scrape that
// started later has recorded its own.
func (r *Replica) claimResult(seq int64) bool {
	for {
		cur := r.scrapeApplied.Load()
		if cur > seq {
			return false
		}
		if r.scrapeApplied.CompareAndSwap(cur, seq) {
			return true
		}
	}
}

// Failing reports whether the replica's last scrape failed.
func (r *Replica) Failing() bool { return r.failing.Load() }

// Pool is the set of replicas. Membership changes are copy-on-write so that the request path
// reads it without a lock.
type Pool struct {
	clk        clock.PassiveClock
	staleAfter time.Duration

	mu       sync.Mutex // serialises writers
	replicas atomic.Pointer[[]*Replica]
}

// DefaultStaleAfter is how old metrics may be before a replica is treated as not ready; the
// same 2 s that llm-d uses.
const DefaultStaleAfter = 2 * time.Second

// New returns an empty pool. staleAfter <= 0 means DefaultStaleAfter.
func New(clk clock.PassiveClock, staleAfter time.Duration) *Pool {
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	p := &Pool{clk: clk, staleAfter: staleAfter}
	p.replicas.Store(&[]*Replica{})
	return p
}

// Replicas returns the current replicas. The slice must not be modified.
func (p *Pool) Replicas() []*Replica { return *p.replicas.Load() }

// ByAddress finds a replica by its ip:port.
func (p *Pool) ByAddress(addr string) *Replica {
	for _, r := range p.Replicas() {
		if r.Address() == addr {
			return r
		}
	}
	return nil
}

// Set replaces the membership with eps. Replicas that stay (by name) keep their metrics and
// in-flight accounting even when their address changes; new ones start with no metrics (not
// ready until first scraped).
func (p *Pool) Set(eps []Endpoint) error {
	seenName := make(map[string]bool, len(eps))
	seenAddr := make(map[string]bool, len(eps))
	for _, e := range eps {
		if err := e.Validate(); err != nil {
			return err
		}
		if seenName[e.Name] {
			return fmt.Errorf("endpoint name %q appears twice", e.Name)
		}
		if seenAddr[e.Address] {
			return fmt.Errorf("endpoint address %q appears twice", e.Address)
		}
		seenName[e.Name], seenAddr[e.Address] = true, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := make(map[string]*Replica)
	for _, r := range p.Replicas() {
		old[r.Name] = r
	}
	next := make([]*Replica, 0, len(eps))
	for _, e := range eps {
		if r, ok := old[e.Name]; ok {
			e.Models = slices.Sorted(slices.Values(e.Models))
			r.endpoint.Store(&e)
			next = append(next, r)
			continue
		}
		next = append(next, NewReplica(e))
	}
	p.replicas.Store(&next)
	return nil
}

// Fresh reports whether r's metrics are recent enough to route on, and its last scrape
// succeeded: a replica that stops answering leaves rotation at once, not when its metrics age.
func (p *Pool) Fresh(r *Replica) bool { return p.FreshAt(r, p.clk.Now()) }

// FreshAt is Fresh as of now, for callers that ask about many replicas at one instant.
func (p *Pool) FreshAt(r *Replica, now time.Time) bool {
	m := r.metrics.Load()
	return m != nil && !r.failing.Load() && now.Sub(m.ScrapedAt) <= p.staleAfter
}

// Ready reports whether at least one replica has fresh metrics.
func (p *Pool) Ready() bool {
	for _, r := range p.Replicas() {
		if p.Fresh(r) {
			return true
		}
	}
	return false
}

// Clock is the pool's clock.
func (p *Pool) Clock() clock.PassiveClock { return p.clk }

// StaleAfter is the metrics age beyond which a replica is not ready.
func (p *Pool) StaleAfter() time.Duration { return p.staleAfter }
