package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/augur-llm/augur/windtunnel/report"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--policy", "fastest"}, "unknown"},
		{[]string{"--workload", "nope"}, "unknown workload"},
		{[]string{"--pool", "8xh200"}, "unknown profile"},
		{[]string{"--pool", "eight"}, "COUNTxPROFILE"},
		{[]string{"--ladder", "fast"}, "--ladder"},
		{[]string{"--rate", "0"}, "positive"},
		{[]string{"--local-stack", "--gateway", "http://x"}, "drop --gateway"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append(tc.args, "--no-progress"), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestVirtualRunWritesTableAndJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"--workload", "mixed-slo", "--pool", "2x8b-h100,1x8b-a100", "--rate", "4",
		"--duration", "20s", "--json", path, "--by-stage"}, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"interactive", "batch", "sim-2", "ttft p50"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "100%") {
		t.Errorf("no progress bar reached 100%%: %q", errb.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Overall.Requests < 50 || len(rep.Replicas) != 3 || len(rep.Stages) != 1 {
		t.Errorf("report: %d requests, %d replicas, %d stages", rep.Overall.Requests, len(rep.Replicas), len(rep.Stages))
	}
}

// TestHTTPAgreesWithVirtual runs the same small shared-prefix workload through the real
// gateway, picker and simulated replicas over HTTP, and in virtual time: the TTFT median must
// agree within 20%, as the virtual world is only useful if it predicts the real one.
func TestHTTPAgreesWithVirtual(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 15 s of real time")
	}
	args := []string{"--workload", "shared-prefix", "--rate", "2", "--duration", "15s", "--output-len", "50",
		"--replicas", "2", "--profile", "32b-tp2-h100", "--policy", "prefix-load", "--no-progress", "--json", "-"}
	get := func(extra ...string) *report.Report {
		var out, errb bytes.Buffer
		if err := run(context.Background(), append(args, extra...), &out, &errb); err != nil {
			t.Fatal(err)
		}
		s := out.String()
		var rep report.Report
		if err := json.Unmarshal([]byte(s[strings.Index(s, "{\n"):]), &rep); err != nil {
			t.Fatal(err)
		}
		return &rep
	}
	httpRep, virtRep := get("--local-stack"), get()
	h, v := *httpRep.Overall.TTFT.P50, *virtRep.Overall.TTFT.P50
	t.Logf("TTFT p50: HTTP %.1f ms, virtual %.1f ms (%d and %d requests)", h, v, httpRep.Overall.Completed, virtRep.Overall.Completed)
	if httpRep.Overall.Completed != virtRep.Overall.Completed || httpRep.Overall.Errors != 0 {
		t.Fatalf("completed %d over HTTP, %d virtually", httpRep.Overall.Completed, virtRep.Overall.Completed)
	}
	if d := h - v; d > 0.2*v || d < -0.2*v {
		t.Fatalf("TTFT p50 over HTTP %.1f ms is more than 20%% from virtual %.1f ms", h, v)
	}
}
