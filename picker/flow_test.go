package picker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

const flowConfig = `flowControl:
  objectives:
    interactive: {priority: 10, ttftMs: 500}
    batch: {priority: -1}
  defaultObjective: interactive
  ttl: 45s
  saturation: {queuePerReplica: 3, stale: saturated}
`

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "epp.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// filterNames lists the running profile's filters, in order.
func filterNames(p *Picker) []string {
	var names []string
	for _, f := range p.Scheduler.Profile().Filters {
		names = append(names, f.Name())
	}
	return names
}

// A flowControl section is read strictly, turns flow control on as the lifecycle's admitter
// with its metrics on the picker's registry, and puts the room filter in front of the
// profile's filters, where a reload keeps it.
func TestFlowControlConfig(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, baseConfig+flowConfig+profileYAML("prefix")))
	if err != nil {
		t.Fatal(err)
	}
	fc := cfg.FlowControl
	if fc == nil || fc.Objectives["batch"].Priority != -1 || fc.DefaultObjective != "interactive" || fc.TTL.Duration != 45*time.Second ||
		fc.Saturation.QueuePerReplica != 3 || fc.Saturation.Stale != flowcontrol.StaleSaturated {
		t.Fatalf("flowControl parsed as %+v", fc)
	}
	reg := prometheus.NewRegistry()
	warns := &warnCounter{}
	p, err := New(cfg, Options{Log: slog.New(warns), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if p.FlowControl() == nil {
		t.Fatal("flow control is configured but the picker has none")
	}
	if got := p.FlowControl().Objective("nobody").Priority; got != 10 {
		t.Errorf("an unknown objective is under priority %d, want the default objective's 10", got)
	}
	if got := filterNames(p); len(got) == 0 || got[0] != "room-filter" {
		t.Errorf("filters %v: the room filter is not first", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "augur_flow_saturated"
	}
	if !found {
		t.Error("flow control's metrics are not on the picker's registry")
	}

	// A reload of another profile keeps the room filter; a changed flowControl waits for a
	// restart and says so.
	rr, err := ParseConfig([]byte(baseConfig + strings.Replace(flowConfig, "queuePerReplica: 3", "queuePerReplica: 5", 1) + profileYAML("rr")))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(rr); err != nil {
		t.Fatal(err)
	}
	if p.Scheduler.Profile().Name != "rr" {
		t.Fatalf("profile %q after the reload, want rr", p.Scheduler.Profile().Name)
	}
	if got := filterNames(p); len(got) != 1 || got[0] != "room-filter" {
		t.Errorf("filters %v after a reload, want the room filter alone", got)
	}
	if room, ok := p.Scheduler.Profile().Filters[0].(scheduler.RoomFilter); !ok || room.QueuePerReplica != 3 {
		t.Errorf("room filter %+v after a reload that changed flowControl, want the running queue limit 3", p.Scheduler.Profile().Filters[0])
	}
	if got := p.Config().FlowControl.Saturation.QueuePerReplica; got != 3 {
		t.Errorf("effective flowControl says queuePerReplica %v, want the running 3", got)
	}
	warns.mu.Lock()
	defer warns.mu.Unlock()
	if len(warns.warns) != 1 || !strings.Contains(warns.warns[0], "next restart") {
		t.Errorf("warnings %q, want one saying the flowControl change waits for a restart", warns.warns)
	}
}

// Without the section nothing changes: no controller, no room filter.
func TestNoFlowControl(t *testing.T) {
	cfg, err := ParseConfig([]byte(baseConfig + profileYAML("prefix")))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if p.FlowControl() != nil || len(filterNames(p)) != 0 {
		t.Errorf("flow control %v and filters %v without a flowControl section", p.FlowControl(), filterNames(p))
	}
}

// A bad flowControl section fails when the file is read, naming the file and the value.
func TestFlowControlConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"flowControl: {saturation: {stale: never}}\n", `saturation.stale "never"`},
		{"flowControl: {ttl: -1s}\n", "ttl -1s must not be negative"},
		{"flowControl: {ttl: 30}\n", `flowControl.ttl must be a duration like "50ms"`},
		{"flowControl: {objectives: {a: {priority: 1}}, defaultObjective: b}\n", `defaultObjective "b" is not among the objectives [a]`},
		{"flowControl: {objectives: {a: {prio: 1}}}\n", `unknown field "prio"`},
		{"flowControl: {saturation: {kvCache: 2}}\n", "saturation.kvCache 2: want 0..1"},
	} {
		path := writeConfig(t, baseConfig+tc.yaml)
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: err %v, want one naming %s and saying %q", tc.yaml, err, path, tc.want)
		}
	}
	// A configuration built in code is checked at New and at Reload alike.
	bad := Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, FlowControl: &flowcontrol.Config{Mode: "eager"}}
	if _, err := New(bad, Options{}); err == nil || !strings.Contains(err.Error(), `flowControl: flowcontrol: mode "eager"`) {
		t.Errorf("New: err %v, want the bad mode", err)
	}
	p, err := New(Config{Endpoints: bad.Endpoints}, Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(bad); err == nil || !strings.Contains(err.Error(), `mode "eager"`) {
		t.Errorf("Reload: err %v, want the bad mode", err)
	}
}

// The example in the shipped configuration, uncommented, is a valid section.
func TestShippedFlowControlExample(t *testing.T) {
	b, err := os.ReadFile("../deploy/local/epp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var section []string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "# flowControl:" || (len(section) > 0 && strings.HasPrefix(line, "#   ")) {
			section = append(section, strings.TrimPrefix(line, "# "))
		}
	}
	if len(section) < 5 {
		t.Fatalf("no flowControl example in deploy/local/epp.yaml (found %q)", section)
	}
	cfg, err := ParseConfig([]byte(baseConfig + strings.Join(section, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fc := cfg.FlowControl; fc == nil || len(fc.Objectives) != 3 || fc.Objectives["batch"].Priority >= 0 {
		t.Errorf("example parsed as %+v", fc)
	}
}

// A successful scrape wakes flow control, which dispatches what now has room; the scraper's
// own hook still runs, and a failed scrape wakes nothing.
func TestScrapeWakesFlowControl(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := pool.New(clk, time.Hour)
	if err := p.Set([]pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	r := p.Replicas()[0]
	r.SetMetrics(pool.Metrics{Waiting: 5, ScrapedAt: clk.Now()}) // a full queue: saturated
	fc, err := flowcontrol.New(flowcontrol.Config{}, flowcontrol.Options{Pool: p, Clock: flowClock(clk), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var seen []error
	s := &pool.Scraper{Pool: p, Observe: func(_ *pool.Replica, err error) { seen = append(seen, err) }}
	wakeOnScrape(s, fc)

	resumed := make(chan error, 1)
	fc.Admit(context.Background(), &scheduler.Request{ID: "q"}, func(err error) { resumed <- err })
	if q := fc.Stats().Queued(); q != 1 {
		t.Fatalf("%d queued while saturated, want 1", q)
	}
	s.Observe(r, context.DeadlineExceeded)
	if q := fc.Stats().Queued(); q != 1 {
		t.Fatalf("%d queued after a failed scrape, want 1", q)
	}
	r.SetMetrics(pool.Metrics{ScrapedAt: clk.Now()}) // the queue drained
	s.Observe(r, nil)
	select {
	case err := <-resumed:
		if err != nil {
			t.Fatalf("resumed with %v, want dispatched", err)
		}
	default:
		t.Fatal("the scrape that showed room did not dispatch the request")
	}
	if len(seen) != 2 || seen[0] == nil || seen[1] != nil {
		t.Errorf("the scraper's own hook saw %v, want both scrapes", seen)
	}
}

// Flow control's timers run on the picker's clock: a fake clock fires them when stepped, on a
// goroutine of their own (flow control reads the clock in them), and stopping one in time
// keeps it from firing.
func TestFlowClock(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	fcl := flowClock(clk)
	if !fcl.Now().Equal(clk.Now()) {
		t.Fatalf("Now %v, want the picker clock's %v", fcl.Now(), clk.Now())
	}
	fired := make(chan time.Time, 1)
	fcl.AfterFunc(time.Second, func() { fired <- fcl.Now() })
	stop := fcl.AfterFunc(time.Second, func() { t.Error("a stopped timer fired") })
	if !stop() {
		t.Error("stopping a pending timer reported it had run")
	}
	clk.Step(time.Second)
	select {
	case at := <-fired:
		if !at.Equal(time.Unix(1001, 0)) {
			t.Errorf("fired at %v, want 1001 s", at)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the timer did not fire when the clock passed it")
	}
	if _, ok := flowClock(clock.RealClock{}).(flowcontrol.RealClock); !ok {
		t.Error("the real clock is not given to flow control as its own real clock")
	}
}
