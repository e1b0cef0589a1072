package picker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

func TestShippedConfigLoads(t *testing.T) {
	// The README tells users to run the picker with this file, from the repository root.
	t.Chdir("..")
	cfg, err := LoadConfig("deploy/local/epp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Pool.Replicas()); n != 4 {
		t.Errorf("%d endpoints, want 4", n)
	}
	if got := p.Config(); got.ScrapeInterval.Duration != 50*time.Millisecond || *got.Fallbacks != 2 {
		t.Errorf("config %+v", got)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"grpcAdress: x\n", `unknown field "grpcAdress"`},
		{"scrapeInterval: fast\n", `invalid duration "fast"`},
		{"scrapeInterval: 50\n", `scrapeInterval must be a duration like "50ms"`},
		{"staleAfter: 2 seconds\n", `"2 seconds"`},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.yaml, err, tc.want)
		}
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no endpoints"},
		{Config{EndpointsFile: "x", Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}}, "set one of"},
		{Config{Kubernetes: &KubernetesConfig{}}, "namespace is required"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, ProfileName: "fastest"}, "unknown profileName"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, ProfileName: "llm-d", Profile: &scheduler.ProfileConfig{}}, "not both"},
		{Config{Kubernetes: &KubernetesConfig{Namespace: "llm"}}, "needs inferencePool"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "nohost"}}}, "not ip:port"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, Models: ModelsConfig{Source: "database"}}, "needs databaseURL"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, Models: ModelsConfig{Source: "directory"}}, "needs models.directory"},
		{Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, Models: ModelsConfig{Source: "s3"}}, `models.source "s3"`},
	} {
		if _, err := New(tc.cfg, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): err %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestServeExposesMetricsAndDrains(t *testing.T) {
	p, err := New(Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, DrainTimeout: metav1.Duration{Duration: time.Second}},
		Options{Clock: clock.RealClock{}, Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	glis, _ := net.Listen("tcp", "127.0.0.1:0")
	mlis, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, glis, mlis) }()
	var body string
	for range 100 {
		resp, err := http.Get("http://" + mlis.Addr().String() + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"augur_decision_duration_seconds", "augur_inflight_requests{endpoint=\"a\"}", "augur_endpoint_metrics_fresh{endpoint=\"a\"} 0"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// Predictions read the prefix match: a profile without a prefix plugin gets one that scores
// nothing, and one with it is left as it is.
func TestProfilesGetAPrefixForPredictions(t *testing.T) {
	eps := []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}
	for name, wantScorers := range map[string]int{"round-robin": 1, "default": 2, "llm-d": 3} {
		p, err := New(Config{Endpoints: eps, ProfileName: name}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		prof := p.Scheduler.Profile()
		if len(prof.Scorers) != wantScorers {
			t.Errorf("%s: %d scorers, want %d", name, len(prof.Scorers), wantScorers)
		}
		prefix := 0
		for _, ws := range prof.Scorers {
			if ws.Name() == "prefix" {
				prefix++
				if name != "llm-d" && ws.Weight != 0 {
					t.Errorf("%s: the added prefix scorer weighs %v", name, ws.Weight)
				}
			}
		}
		if prefix != 1 {
			t.Errorf("%s: %d prefix scorers", name, prefix)
		}
	}
}

func TestBuiltinProfileByName(t *testing.T) {
	p, err := New(Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, ProfileName: "llm-d"},
		Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	prof := p.Scheduler.Profile()
	if prof.Name != "llm-d" || len(prof.Scorers) != 3 || prof.Scorers[0].Name() != "prefix" || prof.Scorers[0].Weight != 3 {
		t.Fatalf("profile %+v", prof)
	}
}

// Durations are written and read back as Go durations; unset ones stay out of the output.
func TestConfigDurations(t *testing.T) {
	c, err := ParseConfig([]byte("scrapeInterval: 50ms\nstaleAfter: 2s\nretention: 168h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ScrapeInterval.Duration != 50*time.Millisecond || c.StaleAfter.Duration != 2*time.Second || c.Retention.Duration != 168*time.Hour {
		t.Fatalf("parsed %+v", c)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "retention: 168h0m0s\nscrapeInterval: 50ms\nstaleAfter: 2s\n"; got != want {
		t.Fatalf("marshalled %q, want %q", got, want)
	}
	if back, err := ParseConfig(out); err != nil || back.StaleAfter != c.StaleAfter || back.Retention != c.Retention {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}
