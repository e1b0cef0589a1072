// Package corpus produces training traffic in the wind tunnel: virtual-time runs of several
// workloads on several pools, each at loads from nearly idle to beyond its capacity (measured,
// not assumed), with a share of decisions explored at random so that replicas a good policy
// would avoid are sampled too. Every request's completion goes to the caller's observers,
// which record it as the picker records production traffic; the trainer cannot tell the two
// apart.
//
// Allowed imports (checked by imports_test.go): requestcontrol, scheduler, windtunnel/report, windtunnel/virtual, windtunnel/workload, k8s.io/utils/clock.
package corpus
