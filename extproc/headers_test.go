package extproc

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func headerMapOf(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

func TestRepeatedSLOHeaders(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kv         []string
		ttft, tpot time.Duration
		err        string // a substring of the error; "" for none
	}{
		{"conflicting ttft", []string{"x-slo-ttft-ms", "100", "x-slo-ttft-ms", "900"}, 0, 0, "x-slo-ttft-ms"},
		{"conflicting tpot", []string{"x-slo-tpot-ms", "40", "X-SLO-TPOT-MS", "50"}, 0, 0, "x-slo-tpot-ms"},
		{"conflicting alias", []string{"x-llm-d-slo-tpot-ms", "40", "x-llm-d-slo-tpot-ms", "50"}, 0, 0, "x-llm-d-slo-tpot-ms"},
		{"conflict with a bad value", []string{"x-slo-ttft-ms", "100", "x-slo-ttft-ms", "soon"}, 0, 0, "x-slo-ttft-ms"},
		{"identical ttft", []string{"x-slo-ttft-ms", "100", "x-slo-ttft-ms", "100"}, 100 * time.Millisecond, 0, ""},
		{"same value spelled differently", []string{"x-slo-tpot-ms", "50", "x-slo-tpot-ms", " 50.0"}, 0, 50 * time.Millisecond, ""},
		{"three identical", []string{"x-slo-tpot-ms", "7", "x-slo-tpot-ms", "7", "x-slo-tpot-ms", "7"}, 0, 7 * time.Millisecond, ""},
		{"standard name wins over the alias", []string{"x-llm-d-slo-ttft-ms", "300", "x-slo-ttft-ms", "200", "x-llm-d-slo-ttft-ms", "400"}, 200 * time.Millisecond, 0, ""},
		{"one joined header", []string{"x-slo-ttft-ms", "100, 900"}, 0, 0, "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rh, err := readHeaders(headerMapOf(tc.kv...))
			if tc.err != "" {
				if _, ok := err.(*BodyError); !ok || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want a client error naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rh.sloTTFT != tc.ttft || rh.sloTPOT != tc.tpot {
				t.Errorf("SLO %v/%v, want %v/%v", rh.sloTTFT, rh.sloTPOT, tc.ttft, tc.tpot)
			}
		})
	}
}
