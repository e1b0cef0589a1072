package pool

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// File is the endpoint file's format:
//
//	endpoints:
//	  - name: sim-0
//	    address: 127.0.0.1:8001
//	    class: 8b-h100
type File struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// LoadFile reads and validates an endpoint file. Unknown fields are errors, so a typo does not
// silently drop a setting.
func LoadFile(path string) ([]Endpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read endpoint file: %w", err)
	}
	return ParseFile(b)
}

// ParseFile parses endpoint-file YAML.
func ParseFile(b []byte) ([]Endpoint, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("endpoint file: %w", err)
	}
	for _, e := range f.Endpoints {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("endpoint file: %w", err)
		}
	}
	return f.Endpoints, nil
}
