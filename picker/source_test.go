package picker

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

func serve(t *testing.T, p *Picker) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, lis, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func waitReplicas(t *testing.T, p *Picker, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		for _, r := range p.Pool.Replicas() {
			got = append(got, r.Name+"="+r.Address())
		}
		if len(got) == len(want) {
			ok := true
			for i := range got {
				ok = ok && got[i] == want[i]
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas %v, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEndpointFileIsWatched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.yaml")
	write := func(s string) {
		if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("endpoints:\n- {name: a, address: 127.0.0.1:1}\n")
	p, err := New(Config{EndpointsFile: path, DrainTimeout: metav1.Duration{Duration: time.Second}},
		Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, p)
	waitReplicas(t, p, "a=127.0.0.1:1")
	write("endpoints:\n- {name: a, address: 127.0.0.1:1}\n- {name: b, address: 127.0.0.1:2}\n")
	waitReplicas(t, p, "a=127.0.0.1:1", "b=127.0.0.1:2")
	write("endpoints:\n- {name: a, address: not-an-address}\n") // rejected: the set stays
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(p.reloadMetrics.endpoints.WithLabelValues("rejected")) < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the invalid endpoint file was never read and rejected")
		}
	}
	waitReplicas(t, p, "a=127.0.0.1:1", "b=127.0.0.1:2")
}

func pod(name, ip string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "llm", Labels: map[string]string{"app": "vllm"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestKubernetesDiscovery(t *testing.T) {
	client := fake.NewClientset(pod("vllm-0", "10.1.0.1", true), pod("vllm-1", "10.1.0.2", false))
	dyn := dynfake.NewSimpleDynamicClient(runtime.NewScheme())
	p, err := New(Config{Kubernetes: &KubernetesConfig{Namespace: "llm", Selector: map[string]string{"app": "vllm"}, TargetPort: 8000},
		DrainTimeout: metav1.Duration{Duration: time.Second}},
		Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), KubeClient: client, DynamicClient: dyn})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, p)
	waitReplicas(t, p, "vllm-0=10.1.0.1:8000")
	if _, err := client.CoreV1().Pods("llm").UpdateStatus(context.Background(), pod("vllm-1", "10.1.0.2", true), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, p, "vllm-0=10.1.0.1:8000", "vllm-1=10.1.0.2:8000")
	if err := client.CoreV1().Pods("llm").Delete(context.Background(), "vllm-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, p, "vllm-1=10.1.0.2:8000")
}
