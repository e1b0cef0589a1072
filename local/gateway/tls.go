package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// PickerTLS makes the connection to the picker TLS instead of plaintext, as
// an Envoy cluster for the ext_proc service with an UpstreamTlsContext does.
// The files are read once, by New, so a bad path fails at start rather than
// on the first request.
type PickerTLS struct {
	// CAFile is a PEM bundle of the authorities trusted to sign the picker's
	// certificate. Empty means the system roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and private key
	// presented to the picker for mutual TLS. Both or neither.
	CertFile string
	KeyFile  string
	// ServerName is the name the picker's certificate must carry, also sent
	// as SNI. Empty means the host part of Config.Picker, which may be an IP
	// address matched against the certificate's IP SANs.
	ServerName string
	// InsecureSkipVerify accepts any certificate the picker presents. It
	// exists for local testing with throwaway certificates; the connection is
	// then encrypted but not authenticated.
	InsecureSkipVerify bool
}

// clientConfig builds the crypto/tls configuration for the picker connection.
func (p *PickerTLS) clientConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		// Envoy's default minimum for upstream TLS.
		MinVersion:         tls.VersionTLS12,
		ServerName:         p.ServerName,
		InsecureSkipVerify: p.InsecureSkipVerify,
	}
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: picker TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gateway: picker TLS CA: no PEM certificate in %s", p.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case p.CertFile != "" && p.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: picker TLS client certificate %s with key %s: %w", p.CertFile, p.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case p.CertFile != "" || p.KeyFile != "":
		return nil, errors.New("gateway: picker TLS client certificate and key must be given together")
	}
	return cfg, nil
}
