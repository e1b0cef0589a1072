package discovery

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/augur-llm/augur/pool"
)

const ns = "llm"

// podOpt adjusts a test pod away from "ready replica".
type podOpt func(*corev1.Pod)

func newPod(name, ip string, podLabels map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: podLabels},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: ip,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions[1].Status = corev1.ConditionFalse }
func pending(p *corev1.Pod)  { p.Status.Phase = corev1.PodPending }
func inNamespace(other string) podOpt {
	return func(p *corev1.Pod) { p.Namespace = other }
}
func terminating(p *corev1.Pod) {
	now := metav1.Now()
	p.DeletionTimestamp = &now
	p.Finalizers = []string{"test/keep"} // a pod being deleted still exists until they are gone
}

var vllm = map[string]string{"app": "vllm"}

func withLabel(base map[string]string, k, v string) map[string]string {
	m := map[string]string{k: v}
	for bk, bv := range base {
		m[bk] = bv
	}
	return m
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startKube runs a KubernetesSource until the test ends and returns what it reports.
func startKube(t *testing.T, src *KubernetesSource, initial []pool.Endpoint) *recorder {
	t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.update) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	rec.waitUpdates(t, 1, initial)
	return rec
}

func mustSource(t *testing.T, client kubernetes.Interface, dyn *dynamicfake.FakeDynamicClient, cfg KubeConfig) *KubernetesSource {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = quiet()
	}
	var src *KubernetesSource
	var err error
	if dyn == nil {
		src, err = NewKubernetesSource(client, nil, cfg)
	} else {
		src, err = NewKubernetesSource(client, dyn, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func ep(name, addr string) pool.Endpoint { return pool.Endpoint{Name: name, Address: addr} }

func TestKubernetesSourceFollowsPods(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		newPod("r2", "10.1.0.2", vllm),
		newPod("r1", "10.1.0.1", withLabel(vllm, "augur.dev/class", "8b-h100")),
		newPod("warming", "10.1.0.3", vllm, notReady),
		newPod("pending", "", vllm, pending),
		newPod("leaving", "10.1.0.4", vllm, terminating),
		newPod("elsewhere", "10.1.0.5", vllm, inNamespace("other")),
		newPod("unrelated", "10.1.0.6", map[string]string{"app": "web"}),
		newPod("no-ip", "", vllm),
	)
	src := mustSource(t, client, nil, KubeConfig{
		Namespace: ns, Selector: vllm, TargetPort: 8000, ClassLabel: "augur.dev/class",
	})
	r1 := pool.Endpoint{Name: "r1", Address: "10.1.0.1:8000", Class: "8b-h100"}
	rec := startKube(t, src, []pool.Endpoint{r1, ep("r2", "10.1.0.2:8000")})
	pods := client.CoreV1().Pods(ns)

	// A pod that becomes ready joins.
	warming, err := pods.Get(ctx, "warming", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warming.Status.Conditions[1].Status = corev1.ConditionTrue
	if _, err := pods.UpdateStatus(ctx, warming, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 2, []pool.Endpoint{r1, ep("r2", "10.1.0.2:8000"), ep("warming", "10.1.0.3:8000")})

	// One that fails its readiness probe leaves.
	p1, err := pods.Get(ctx, "r1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p1.Status.Conditions[1].Status = corev1.ConditionFalse
	if _, err := pods.UpdateStatus(ctx, p1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 3, []pool.Endpoint{ep("r2", "10.1.0.2:8000"), ep("warming", "10.1.0.3:8000")})

	// A new IP (e.g. the sandbox was recreated) moves the address.
	p2, err := pods.Get(ctx, "r2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p2.Status.PodIP = "10.1.0.22"
	if _, err := pods.UpdateStatus(ctx, p2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 4, []pool.Endpoint{ep("r2", "10.1.0.22:8000"), ep("warming", "10.1.0.3:8000")})

	// Changes that do not alter the set report nothing; the deletion after them proves they
	// were processed, since updates arrive in order.
	other := client.CoreV1().Pods("other")
	if _, err := other.Create(ctx, newPod("elsewhere-2", "10.1.0.7", vllm, inNamespace("other")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, newPod("unrelated-2", "10.1.0.8", map[string]string{"app": "web"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p2, err = pods.Get(ctx, "r2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p2.Annotations = map[string]string{"touched": "yes"}
	if _, err := pods.Update(ctx, p2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "warming", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 5, []pool.Endpoint{ep("r2", "10.1.0.22:8000")})

	// A pod that starts terminating leaves before it is gone.
	p2, err = pods.Get(ctx, "r2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	terminating(p2)
	if _, err := pods.Update(ctx, p2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 6, []pool.Endpoint{})
}

func TestKubernetesSourceMetricsPortAndDuplicates(t *testing.T) {
	client := fake.NewClientset(
		// Host-network pods on one node share its IP; only the first by name is kept.
		newPod("b", "10.2.0.1", vllm),
		newPod("a", "10.2.0.1", vllm),
		newPod("c", "fd00::3", vllm),
	)
	src := mustSource(t, client, nil, KubeConfig{Namespace: ns, Selector: vllm, TargetPort: 8000, MetricsPort: 9090})
	startKube(t, src, []pool.Endpoint{
		{Name: "a", Address: "10.2.0.1:8000", MetricsURL: "http://10.2.0.1:9090/metrics"},
		{Name: "c", Address: "[fd00::3]:8000", MetricsURL: "http://[fd00::3]:9090/metrics"},
	})
}

func TestKubernetesSourceEmptyAtStart(t *testing.T) {
	client := fake.NewClientset()
	src := mustSource(t, client, nil, KubeConfig{Namespace: ns, Selector: vllm, TargetPort: 8000})
	rec := startKube(t, src, nil)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), newPod("r1", "10.3.0.1", vllm), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 2, []pool.Endpoint{ep("r1", "10.3.0.1:8000")})
}

func inferencePool(name string, matchLabels map[string]any, ports ...int64) *unstructured.Unstructured {
	targetPorts := make([]any, len(ports))
	for i, p := range ports {
		targetPorts[i] = map[string]any{"number": p}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "inference.networking.k8s.io/v1",
		"kind":       "InferencePool",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"selector":    map[string]any{"matchLabels": matchLabels},
			"targetPorts": targetPorts,
			"endpointPickerRef": map[string]any{
				"name": "augur-epp",
				"port": map[string]any{"number": int64(9002)},
			},
		},
	}}
}

func newDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{inferencePoolGVR: "InferencePoolList"}, objs...)
}

func TestKubernetesSourceInferencePool(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		newPod("a1", "10.4.0.1", map[string]string{"pool": "a"}),
		newPod("b1", "10.4.0.2", map[string]string{"pool": "b"}),
		newPod("b2", "10.4.0.3", map[string]string{"pool": "b"}),
	)
	dyn := newDynamic(
		inferencePool("llama", map[string]any{"pool": "a"}, 8000),
		// Another pool in the namespace must not be confused with ours.
		inferencePool("other", map[string]any{"pool": "b"}, 7000),
	)
	var errs recorder
	src := mustSource(t, client, dyn, KubeConfig{
		Namespace: ns, InferencePool: "llama", OnError: errs.onError,
		// Both ignored in favour of the pool's.
		Selector: map[string]string{"pool": "b"}, TargetPort: 1,
	})
	rec := startKube(t, src, []pool.Endpoint{ep("a1", "10.4.0.1:8000")})
	pools := dyn.Resource(inferencePoolGVR).Namespace(ns)

	// A new target port moves every address.
	if _, err := pools.Update(ctx, inferencePool("llama", map[string]any{"pool": "a"}, 8001), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 2, []pool.Endpoint{ep("a1", "10.4.0.1:8001")})

	// A new selector selects other pods.
	if _, err := pools.Update(ctx, inferencePool("llama", map[string]any{"pool": "b"}, 8001), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 3, []pool.Endpoint{ep("b1", "10.4.0.2:8001"), ep("b2", "10.4.0.3:8001")})

	// The informer of the new selector follows pods as well.
	if err := client.CoreV1().Pods(ns).Delete(ctx, "b1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 4, []pool.Endpoint{ep("b2", "10.4.0.3:8001")})

	// A broken pool is reported and ignored: the previous selection stays.
	if _, err := pools.Update(ctx, inferencePool("llama", map[string]any{}, 8001), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "OnError for the broken pool", func() bool { _, e := errs.counts(); return e == 1 })
	if err := pools.Delete(ctx, "llama", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "OnError for the deleted pool", func() bool { _, e := errs.counts(); return e == 2 })
	errs.mu.Lock()
	deleted := errs.errs[1]
	errs.mu.Unlock()
	if !strings.Contains(deleted.Error(), "deleted") {
		t.Fatalf("error %q does not say the pool was deleted", deleted)
	}
	// Pods are still followed under the kept selection.
	if _, err := client.CoreV1().Pods(ns).Create(ctx, newPod("b3", "10.4.0.4", map[string]string{"pool": "b"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 5, []pool.Endpoint{ep("b2", "10.4.0.3:8001"), ep("b3", "10.4.0.4:8001")})
	if _, e := errs.counts(); e != 2 {
		t.Fatalf("%d errors; a lasting pool problem must be reported once", e)
	}

	// Recreating the pool applies it again.
	if _, err := pools.Create(ctx, inferencePool("llama", map[string]any{"pool": "a"}, 8000), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitUpdates(t, 6, []pool.Endpoint{ep("a1", "10.4.0.1:8000")})
}

func TestKubernetesSourceInferencePoolStartErrors(t *testing.T) {
	client := fake.NewClientset(newPod("a1", "10.4.0.1", map[string]string{"pool": "a"}))
	for name, tc := range map[string]struct {
		dyn  *dynamicfake.FakeDynamicClient
		want string
	}{
		"missing":          {newDynamic(inferencePool("other", map[string]any{"pool": "a"}, 8000)), "not found"},
		"no resource":      {newDynamic(), "not found"},
		"empty selector":   {newDynamic(inferencePool("llama", map[string]any{}, 8000)), "selector is empty"},
		"no target ports":  {newDynamic(inferencePool("llama", map[string]any{"pool": "a"})), "targetPorts"},
		"port range":       {newDynamic(inferencePool("llama", map[string]any{"pool": "a"}, 70000)), "out of range"},
		"bad label value":  {newDynamic(inferencePool("llama", map[string]any{"pool": "a b"}, 8000)), "selector"},
		"non-string label": {newDynamic(inferencePool("llama", map[string]any{"pool": int64(1)}, 8000)), "matchLabels"},
	} {
		t.Run(name, func(t *testing.T) {
			src := mustSource(t, client, tc.dyn, KubeConfig{Namespace: ns, InferencePool: "llama"})
			called := false
			err := src.Run(context.Background(), func([]pool.Endpoint) { called = true })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "llama") {
				t.Fatalf("error %q does not name the pool", err)
			}
			if called {
				t.Fatal("update called")
			}
		})
	}
}

func TestNewKubernetesSourceValidates(t *testing.T) {
	client := fake.NewClientset()
	for name, tc := range map[string]struct {
		client kubernetes.Interface
		dyn    bool
		cfg    KubeConfig
	}{
		"nil client":             {nil, false, KubeConfig{Namespace: ns, Selector: vllm, TargetPort: 80}},
		"no namespace":           {client, false, KubeConfig{Selector: vllm, TargetPort: 80}},
		"no selector":            {client, false, KubeConfig{Namespace: ns, TargetPort: 80}},
		"bad selector":           {client, false, KubeConfig{Namespace: ns, Selector: map[string]string{"a b": "c"}, TargetPort: 80}},
		"no port":                {client, false, KubeConfig{Namespace: ns, Selector: vllm}},
		"port range":             {client, false, KubeConfig{Namespace: ns, Selector: vllm, TargetPort: 65536}},
		"metrics port":           {client, false, KubeConfig{Namespace: ns, Selector: vllm, TargetPort: 80, MetricsPort: -1}},
		"pool, no dyn":           {client, false, KubeConfig{Namespace: ns, InferencePool: "p"}},
		"pool, bad metrics port": {client, true, KubeConfig{Namespace: ns, InferencePool: "p", MetricsPort: 1 << 20}},
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if tc.dyn {
				_, err = NewKubernetesSource(tc.client, newDynamic(), tc.cfg)
			} else {
				_, err = NewKubernetesSource(tc.client, nil, tc.cfg)
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestPodReady(t *testing.T) {
	noCondition := newPod("p", "10.0.0.1", vllm)
	noCondition.Status.Conditions = noCondition.Status.Conditions[:1]
	for name, tc := range map[string]struct {
		pod  *corev1.Pod
		want bool
	}{
		"ready":        {newPod("p", "10.0.0.1", vllm), true},
		"not ready":    {newPod("p", "10.0.0.1", vllm, notReady), false},
		"pending":      {newPod("p", "10.0.0.1", vllm, pending), false},
		"terminating":  {newPod("p", "10.0.0.1", vllm, terminating), false},
		"no IP":        {newPod("p", "", vllm), false},
		"no condition": {noCondition, false},
		"succeeded":    {newPod("p", "10.0.0.1", vllm, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false},
	} {
		if got := podReady(tc.pod); got != tc.want {
			t.Errorf("%s: podReady = %v, want %v", name, got, tc.want)
		}
	}
}

func TestParseInferencePoolPortTypes(t *testing.T) {
	u := inferencePool("p", map[string]any{"app": "x"}, 8000)
	// Decoded JSON may carry numbers as float64 in hand-built objects.
	u.Object["spec"].(map[string]any)["targetPorts"] = []any{map[string]any{"number": float64(8080)}}
	sel, err := parseInferencePool(u)
	if err != nil || sel.port != 8080 {
		t.Fatalf("parse = %+v, %v", sel, err)
	}
	u.Object["spec"].(map[string]any)["targetPorts"] = []any{map[string]any{"number": 80.5}}
	if _, err := parseInferencePool(u); err == nil {
		t.Fatal("fractional port accepted")
	}
	u.Object["spec"].(map[string]any)["targetPorts"] = []any{"8080"}
	if _, err := parseInferencePool(u); err == nil {
		t.Fatal("string port entry accepted")
	}
}
