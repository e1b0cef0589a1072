package gateway

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestParseDestinations(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		skipped []string
		err     bool
	}{
		{in: "10.0.0.1:8000", want: []string{"10.0.0.1:8000"}},
		{in: "10.0.0.1:8000, 10.0.0.2:8000", want: []string{"10.0.0.1:8000", "10.0.0.2:8000"}},
		{in: "[fd00::1]:8000", want: []string{"[fd00::1]:8000"}},
		{in: "pod-a:8000,10.0.0.2:8000", want: []string{"10.0.0.2:8000"}, skipped: []string{"pod-a:8000"}},
		{in: "10.0.0.1", err: true, skipped: []string{"10.0.0.1"}},
		{in: "10.0.0.1:0", err: true, skipped: []string{"10.0.0.1:0"}},
		{in: "", err: true},
	} {
		got, skipped, err := parseDestinations(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) || !slices.Equal(skipped, tc.skipped) {
			t.Errorf("parseDestinations(%q) = %v, %v, %v", tc.in, got, skipped, err)
		}
		if err != nil && !errors.Is(err, errNoDestination) {
			t.Errorf("error %v does not wrap errNoDestination", err)
		}
	}
}

func opt(k, v string, appendValue bool) *corev3.HeaderValueOption {
	o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
	if appendValue {
		o.Append = wrapperspb.Bool(true)
	}
	return o
}

func TestApplyMutationFollowsEnvoyDefaults(t *testing.T) {
	h := headerList{
		{":method", "POST"}, {":path", "/v1/completions"}, {":authority", "gw"}, {":scheme", "http"},
		{"accept", "a"}, {"accept", "b"}, {"x-drop", "1"}, {"x-envoy-original", "1"},
	}
	m := &extprocv3.HeaderMutation{
		SetHeaders: []*corev3.HeaderValueOption{
			opt("Accept", "c", false),              // overwrite by default, like append=false
			opt("x-multi", "1", true),              // append
			opt("x-multi", "2", true),              // append
			opt(":authority", "evil", false),       // forbidden
			opt("x-envoy-upstream", "evil", false), // forbidden
			opt(":path", "/v1/chat/completions", false),
		},
		RemoveHeaders: []string{"x-drop", ":path", "host"},
	}
	ignored, err := applyMutation(&h, m, mutationRules{})
	if err != nil {
		t.Fatal(err)
	}
	want := headerList{
		{":method", "POST"}, {":path", "/v1/chat/completions"}, {":authority", "gw"}, {":scheme", "http"},
		{"accept", "c"}, {"x-envoy-original", "1"}, {"x-multi", "1"}, {"x-multi", "2"},
	}
	if !slices.Equal(h, want) {
		t.Errorf("headers = %v\nwant      %v", h, want)
	}
	if !slices.Equal(ignored, []string{":path", "host", ":authority", "x-envoy-upstream"}) {
		t.Errorf("ignored = %v", ignored)
	}
}

func TestApplyMutationRejectsWhatEnvoyRejects(t *testing.T) {
	for name, m := range map[string]*extprocv3.HeaderMutation{
		"value and raw_value": {SetHeaders: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "x", Value: "1", RawValue: []byte("1")}},
		}},
		"bad name":   {SetHeaders: []*corev3.HeaderValueOption{opt("bad name", "1", false)}},
		"bad value":  {SetHeaders: []*corev3.HeaderValueOption{opt("x", "a\r\nb", false)}},
		"bad remove": {RemoveHeaders: []string{"bad name"}},
		"bad status": {SetHeaders: []*corev3.HeaderValueOption{opt(":status", "abc", false)}},
	} {
		var h headerList
		if _, err := applyMutation(&h, m, mutationRules{}); !errors.Is(err, errInvalidMutation) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestValueWithoutRawValueBecomesEmpty(t *testing.T) {
	m := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: HeaderDestinationEndpoint, Value: "10.0.0.1:8000"}},
	}}
	var h headerList
	if _, err := applyMutation(&h, m, mutationRules{}); err != nil {
		t.Fatal(err)
	}
	if v, _ := h.get(HeaderDestinationEndpoint); v != "" {
		t.Errorf("value-only header became %q; Envoy leaves it empty", v)
	}
	if got := rawValueMisuse(m); !slices.Equal(got, []string{HeaderDestinationEndpoint}) {
		t.Errorf("rawValueMisuse = %v", got)
	}
}

func TestWatchdogFiresWhileAnAnswerIsOwed(t *testing.T) {
	fired := make(chan struct{}, 1)
	w := newWatchdog(20*time.Millisecond, func() { fired <- struct{}{} })
	w.expect()
	w.expect()
	w.satisfy()
	w.progress()
	// One answer is still owed, so the silence that follows must trip it.
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("watchdog did not fire")
	}
	w.stop()
}
