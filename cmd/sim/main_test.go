package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/sim"
)

func TestRunServesReplicasAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrsCh := make(chan []string, 1)
	var logs strings.Builder
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() {
		runErr = run(ctx, []string{"--replicas", "3", "--base-port", "0", "--profile", "32b-tp2-h100",
			"--model", "m", "--time-scale", "0.01", "--stream-interval", "2"}, &syncWriter{w: &logs}, func(a []string) { addrsCh <- a })
	})
	var addrs []string
	select {
	case addrs = <-addrsCh:
	case <-time.After(10 * time.Second):
		t.Fatal("replicas did not start")
	}
	if len(addrs) != 3 {
		t.Fatalf("addrs %v", addrs)
	}
	for i, addr := range addrs {
		resp, err := http.Post("http://"+addr+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"m","prompt":"ping","max_tokens":5,"stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got, want := resp.Header.Get(sim.HeaderReplica), "sim-"+string(rune('0'+i)); got != want {
			t.Errorf("replica header %q, want %q", got, want)
		}
		// stream interval 2: 1 + 2 + 2 tokens, then [DONE].
		if n := strings.Count(string(body), "data: "); n != 4 || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
			t.Errorf("replica %d stream: %s", i, body)
		}
		resp, err = http.Get("http://" + addr + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		var models struct {
			Data []struct {
				ID          string `json:"id"`
				MaxModelLen int    `json:"max_model_len"`
			} `json:"data"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&models)
		resp.Body.Close()
		if len(models.Data) != 1 || models.Data[0].ID != "m" || models.Data[0].MaxModelLen != 32768 {
			t.Errorf("models %+v", models)
		}
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Errorf("logs lack the shutdown line:\n%s", logs.String())
	}
}

func TestFlagsAndProfileOverrides(t *testing.T) {
	o, err := parseFlags([]string{"--profile", "8b-h100", "--num-gpu-blocks", "1000", "--tw-us", "9000", "--jitter", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.buildProfile()
	if err != nil {
		t.Fatal(err)
	}
	if p.NumGPUBlocks != 1000 || p.TwMicros != 9000 || p.Jitter != 0 || p.MaxModelLen != 999*16 || p.KLinMicros != 22 {
		t.Errorf("profile %+v", p)
	}
	for _, args := range [][]string{{"--replicas", "0"}, {"--base-port", "65535", "--replicas", "2"}, {"stray"}, {"--profile", "nope"}} {
		o, err := parseFlags(args, io.Discard)
		if err == nil {
			_, err = o.buildProfile()
		}
		if err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// syncWriter serialises log writes from the replicas' goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestTokenTextFlag(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.tokenText != sim.TokenTextEcho {
		t.Fatalf("default token text %v, %v; want echo", o.tokenText, err)
	}
	if _, err := parseFlags([]string{"--token-text", "words"}, io.Discard); err == nil {
		t.Error("--token-text words accepted")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrsCh := make(chan []string, 1)
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() {
		runErr = run(ctx, []string{"--base-port", "0", "--model", "m", "--time-scale", "0.01", "--token-text", "natural"},
			io.Discard, func(a []string) { addrsCh <- a })
	})
	var addrs []string
	select {
	case addrs = <-addrsCh:
	case <-time.After(10 * time.Second):
		t.Fatal("replica did not start")
	}
	resp, err := http.Post("http://"+addrs[0]+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"m","prompt":"ping","max_tokens":12}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || len(out.Choices) != 1 || out.Choices[0].Text != sim.NaturalText("ping", 0, 12) {
		t.Errorf("--token-text natural: %+v, %v; want %q", out, err, sim.NaturalText("ping", 0, 12))
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
}
