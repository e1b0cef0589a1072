package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

var errNoDestination = errors.New("no destination endpoint")

// parseDestinations reads the destination header: one "ip:port" or a comma
// list with the primary first. Like Envoy's ORIGINAL_DST cluster it accepts
// only IP literals (IPv6 in brackets), never host names, so a picker cannot
// make the gateway resolve names. Invalid entries are skipped, as the
// protocol asks ("the first valid endpoint in the list will be used").
func parseDestinations(value string) (endpoints []string, skipped []string, err error) {
	for _, part := range strings.Split(value, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ap, perr := netip.ParseAddrPort(part)
		if perr != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			skipped = append(skipped, part)
			continue
		}
		endpoints = append(endpoints, net.JoinHostPort(ap.Addr().Unmap().String(), fmt.Sprint(ap.Port())))
	}
	if len(endpoints) == 0 {
		if value == "" {
			return nil, skipped, fmt.Errorf("%w: header %s is missing", errNoDestination, HeaderDestinationEndpoint)
		}
		return nil, skipped, fmt.Errorf("%w: header %s=%q has no valid ip:port", errNoDestination, HeaderDestinationEndpoint, value)
	}
	return endpoints, skipped, nil
}
