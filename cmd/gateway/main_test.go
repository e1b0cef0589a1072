package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/augur-llm/augur/local/gateway"
)

func TestRunRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--picker", ""}, "picker address is required"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--picker-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{[]string{"--picker-cert", "gw.pem"}, "certificate and key must be given together"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestPickerTLSFlags(t *testing.T) {
	if got := pickerTLS(false, "", "", "", "", false); got != nil {
		t.Errorf("no TLS flags gave %+v, want a plaintext connection", got)
	}
	if got := pickerTLS(true, "", "", "", "", false); !reflect.DeepEqual(got, &gateway.PickerTLS{}) {
		t.Errorf("--picker-tls alone gave %+v, want TLS with the system roots", got)
	}
	want := &gateway.PickerTLS{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "epp", InsecureSkipVerify: true}
	if got := pickerTLS(false, "ca.pem", "c.pem", "k.pem", "epp", true); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, got := range []*gateway.PickerTLS{
		pickerTLS(false, "ca.pem", "", "", "", false),
		pickerTLS(false, "", "", "", "epp", false),
		pickerTLS(false, "", "", "", "", true),
	} {
		if got == nil {
			t.Error("a TLS flag without --picker-tls left the connection plaintext")
		}
	}
}
