package workload_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/workload"
)

// A Mooncake replay served by a simulated replica: each request's prompt and output are the
// trace's token counts, and the replica's prefix cache hits exactly the blocks the request's
// hash ids share with an earlier request (in whole 16-token cache blocks, and short of the
// last token, which is always recomputed).
func TestMooncakeReuseReachesTheSimulator(t *testing.T) {
	lines := []string{
		`{"timestamp": 0, "input_length": 1536, "output_length": 3, "hash_ids": [1, 2, 3]}`,
		`{"timestamp": 10, "input_length": 1300, "output_length": 4, "hash_ids": [1, 2, 4]}`,    // 2 blocks
		`{"timestamp": 20, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]}`,        // 700: 512 + 188 of block 2
		`{"timestamp": 30, "input_length": 2048, "output_length": 6, "hash_ids": [5, 2, 3, 4]}`, // nothing
		`{"timestamp": 40, "input_length": 1536, "output_length": 7, "hash_ids": [1, 2, 3]}`,    // all but the last token
		`{"timestamp": 50, "input_length": 1030, "output_length": 8, "hash_ids": [5, 2, 9]}`,    // 1024
		`{"timestamp": 60, "input_length": 100, "output_length": 9, "hash_ids": [7]}`,           // nothing
		`{"timestamp": 70, "input_length": 90, "output_length": 1, "hash_ids": [7]}`,            // 89 -> 80 in blocks of 16
	}
	wantCached := []int{0, 1024, 688, 0, 1520, 1024, 0, 80}
	tr, err := workload.ParseMooncake(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	g, err := workload.NewTraceReplay("mc", 1, workload.ConstantLadder(8, time.Second), tr, workload.TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := newSimServer(t)
	for i, r := range workload.Collect(g) {
		r.Stream = false
		req := httptest.NewRequest(http.MethodPost, r.Path(), bytes.NewReader(r.Body(testModel)))
		req.Header.Set("content-type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		var out struct {
			Usage struct {
				PromptTokens        int `json:"prompt_tokens"`
				CompletionTokens    int `json:"completion_tokens"`
				PromptTokensDetails struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
			t.Fatalf("request %d: status %d: %s", i, rec.Code, rec.Body)
		}
		u := out.Usage
		if u.PromptTokens != tr.Rows[i].Input || u.CompletionTokens != tr.Rows[i].Output || u.PromptTokensDetails.CachedTokens != wantCached[i] {
			t.Errorf("request %d: usage %+v, want %d prompt, %d completion and %d cached tokens",
				i, u, tr.Rows[i].Input, tr.Rows[i].Output, wantCached[i])
		}
	}
}
