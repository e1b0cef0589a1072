// Package discovery tells the picker which replicas exist. A Source reports the whole endpoint
// set each time it changes; the caller applies it to the pool (pool.Pool.Set). Two sources
// exist: an endpoint file that is watched for edits (for local runs and static deployments,
// including a file mounted from a ConfigMap), and the Kubernetes API, which lists the ready
// pods that an InferencePool or a plain label selector names.
//
// Sources only report membership; the pool keeps each replica's metrics and in-flight
// accounting across updates. A source that cannot produce a valid set keeps reporting its last
// good one rather than an empty one, because routing to the previous replicas is better than
// routing to none.
//
// It may depend on the pool package (for the endpoint type and file format), client-go and
// fsnotify; never on the scheduler, the request path or the picker.
//
// Allowed imports (checked by imports_test.go): pool, github.com/fsnotify/fsnotify, k8s.io/api, k8s.io/apimachinery, k8s.io/client-go, k8s.io/utils.
package discovery
