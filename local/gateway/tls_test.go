package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/augur-llm/augur/local/gateway"
)

// testCA is a throwaway certificate authority for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate as a PEM file
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue signs a leaf certificate for the given use and writes it and its key
// as PEM files.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

func writePEM(t *testing.T, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPickerOverTLS(t *testing.T) {
	ca := newTestCA(t, "augur-test-ca")
	otherCA := newTestCA(t, "other-ca")
	serverCert, _, _ := ca.issue(t, "picker.test", x509.ExtKeyUsageServerAuth)
	_, clientCertFile, clientKeyFile := ca.issue(t, "gateway.test", x509.ExtKeyUsageClientAuth)
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.cert)

	for _, tc := range []struct {
		name       string
		tls        gateway.PickerTLS
		wantStatus int
		wantError  string // in the gateway's error body
	}{
		{
			name: "mutual TLS with the right CA",
			tls: gateway.PickerTLS{CAFile: ca.file, CertFile: clientCertFile, KeyFile: clientKeyFile,
				ServerName: "picker.test"},
			wantStatus: http.StatusOK,
		},
		{
			name:       "server name defaults to the picker's IP",
			tls:        gateway.PickerTLS{CAFile: ca.file, CertFile: clientCertFile, KeyFile: clientKeyFile},
			wantStatus: http.StatusOK,
		},
		{
			name: "wrong CA",
			tls: gateway.PickerTLS{CAFile: otherCA.file, CertFile: clientCertFile, KeyFile: clientKeyFile,
				ServerName: "picker.test"},
			wantStatus: http.StatusServiceUnavailable,
			wantError:  "certificate signed by unknown authority",
		},
		{
			name: "wrong server name",
			tls: gateway.PickerTLS{CAFile: ca.file, CertFile: clientCertFile, KeyFile: clientKeyFile,
				ServerName: "elsewhere.test"},
			wantStatus: http.StatusServiceUnavailable,
			wantError:  "elsewhere.test",
		},
		{
			name: "no client certificate",
			// In TLS 1.3 the server refuses the missing certificate only
			// after the client's handshake is done, so what the gateway
			// reports (the alert, a reset, a broken pipe) depends on timing.
			tls:        gateway.PickerTLS{CAFile: ca.file, ServerName: "picker.test"},
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name: "insecure skip verify",
			tls: gateway.PickerTLS{CAFile: otherCA.file, CertFile: clientCertFile, KeyFile: clientKeyFile,
				InsecureSkipVerify: true},
			wantStatus: http.StatusOK,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, nil)
			p := newFakePicker(routeTo(up.addr))
			creds := credentials.NewTLS(&tls.Config{
				Certificates: []tls.Certificate{serverCert},
				ClientCAs:    clientCAs,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				MinVersion:   tls.VersionTLS12,
			})
			picker := startPicker(t, p, grpc.Creds(creds))
			pickerTLS := tc.tls
			gw, _ := startGateway(t, gateway.Config{Picker: picker, PickerTLS: &pickerTLS})

			resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%d %s", resp.StatusCode, body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantError) {
				t.Fatalf("got %d %s, want %d mentioning %q", resp.StatusCode, body, tc.wantStatus, tc.wantError)
			}
			reached := up.hits.Load() > 0
			if reached != (tc.wantStatus == http.StatusOK) {
				t.Errorf("upstream reached = %v", reached)
			}
		})
	}
}

func TestPickerTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "augur-test-ca")
	_, certFile, keyFile := ca.issue(t, "gateway.test", x509.ExtKeyUsageClientAuth)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		tls  gateway.PickerTLS
		want string
	}{
		{"missing CA file", gateway.PickerTLS{CAFile: missing}, "missing.pem"},
		{"CA file without PEM", gateway.PickerTLS{CAFile: notPEM}, "no PEM certificate in " + notPEM},
		{"certificate without key", gateway.PickerTLS{CertFile: certFile}, "must be given together"},
		{"key without certificate", gateway.PickerTLS{KeyFile: keyFile}, "must be given together"},
		{"key that does not match", gateway.PickerTLS{CertFile: certFile, KeyFile: notPEM}, "client certificate " + certFile},
	} {
		pickerTLS := tc.tls
		_, err := gateway.New(gateway.Config{Picker: "127.0.0.1:9002", PickerTLS: &pickerTLS})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}
