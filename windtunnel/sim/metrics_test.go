package sim

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestMetricsExposeExactlyTheVLLMNames(t *testing.T) {
	ts, _ := startServer(t, 0, profile(t, "32b-tp2-h100"))
	body := `{"model":"sim-test","prompt":"` + strings.Repeat("abcd", 100) + `","max_tokens":5}`
	for range 2 {
		resp := post(t, ts.URL+"/v1/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}

	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"vllm:num_requests_running":        "GAUGE",
		"vllm:num_requests_waiting":        "GAUGE",
		"vllm:kv_cache_usage_perc":         "GAUGE",
		"vllm:prefix_cache_queries_total":  "COUNTER",
		"vllm:prefix_cache_hits_total":     "COUNTER",
		"vllm:num_preemptions_total":       "COUNTER",
		"vllm:prompt_tokens_total":         "COUNTER",
		"vllm:generation_tokens_total":     "COUNTER",
		"vllm:cache_config_info":           "GAUGE",
		"vllm:time_to_first_token_seconds": "HISTOGRAM",
		"vllm:inter_token_latency_seconds": "HISTOGRAM",
		"vllm:e2e_request_latency_seconds": "HISTOGRAM",
		"vllm:request_queue_time_seconds":  "HISTOGRAM",
	}
	var got []string
	for name := range families {
		got = append(got, name)
	}
	sort.Strings(got)
	if len(got) != len(want) {
		t.Errorf("exposed families %v, want exactly %d vLLM ones", got, len(want))
	}
	values := map[string]float64{}
	for name, typ := range want {
		mf, ok := families[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if mf.GetType().String() != typ {
			t.Errorf("%s is a %s, want %s", name, mf.GetType(), typ)
		}
		if len(mf.GetMetric()) != 1 {
			t.Errorf("%s has %d series, want 1", name, len(mf.GetMetric()))
			continue
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["engine"] != "0" {
			t.Errorf("%s labels %v lack engine=0", name, labels)
		}
		if name == "vllm:cache_config_info" {
			if labels["block_size"] != "16" || labels["num_gpu_blocks"] != "19208" || m.GetGauge().GetValue() != 1 {
				t.Errorf("cache_config_info %v = %v", labels, m.GetGauge().GetValue())
			}
			continue
		}
		if labels["model_name"] != testModel {
			t.Errorf("%s labels %v lack model_name", name, labels)
		}
		switch typ {
		case "GAUGE":
			values[name] = m.GetGauge().GetValue()
		case "COUNTER":
			values[name] = m.GetCounter().GetValue()
		case "HISTOGRAM":
			values[name] = float64(m.GetHistogram().GetSampleCount())
		}
	}
	for name, v := range map[string]float64{
		"vllm:prompt_tokens_total":         200,
		"vllm:generation_tokens_total":     10,
		"vllm:prefix_cache_queries_total":  200,
		"vllm:prefix_cache_hits_total":     96, // (100-1)/16 full blocks of the repeat
		"vllm:num_requests_running":        0,
		"vllm:kv_cache_usage_perc":         0,
		"vllm:time_to_first_token_seconds": 2,
		"vllm:inter_token_latency_seconds": 8,
		"vllm:e2e_request_latency_seconds": 2,
		"vllm:request_queue_time_seconds":  2,
	} {
		if values[name] != v {
			t.Errorf("%s = %v, want %v", name, values[name], v)
		}
	}
}
