package config

import (
	"errors"

	"github.com/edgeapp/edgeapp/edged/proxy"
	"github.com/edgeapp/edgeapp/edged/proxyproto"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// ProxyConfig is [upstream.NAME] as the proxy package takes it. The proxy
// package owns the defaults and the checks of these settings.
func (u *Upstream) ProxyConfig(name string) proxy.UpstreamConfig {
	pc := proxy.UpstreamConfig{
		Name:                  name,
		Policy:                u.Policy,
		HashKey:               u.HashKey,
		FailTimeout:           u.FailTimeout.D(),
		ConnectTimeout:        u.ConnectTimeout.D(),
		ResponseHeaderTimeout: u.ResponseHeaderTimeout.D(),
		IdleConnTimeout:       u.IdleTimeout.D(),
		MaxIdleConnsPerServer: u.MaxIdle,
		RetryIdempotent:       u.RetryIdempotent,
		RetryBodyMax:          int64(u.RetryBodyMax),
		HostHeader:            u.HostHeader,
		TLS: proxy.TLSConfig{
			Enabled: u.TLS, ServerName: u.TLSName, CAFile: u.TLSCA, CertFile: u.TLSCert, KeyFile: u.TLSKey,
		},
		Protocol: u.Protocol,
		Dynamic:  u.Discovers(), // servers found at run time (cluster.go)
		Health: proxy.HealthConfig{
			Path: u.Health.Path, Connect: u.Health.TCP, Interval: u.Health.Interval.D(), Timeout: u.Health.Timeout.D(),
			ExpectStatus: u.Health.Status, Rise: u.Health.Rise, Fall: u.Health.Fall, Host: u.Health.Host,
			GRPC: u.Health.GRPC, GRPCService: u.Health.GRPCService,
		},
	}
	pc.SendProxy, _ = proxyproto.ParseVersion(u.SendProxy)
	if u.MaxFails != nil {
		pc.MaxFails = *u.MaxFails
	}
	if u.Retries != nil {
		pc.Retries = *u.Retries
	}
	for _, sv := range u.Servers {
		pc.Servers = append(pc.Servers, proxy.ServerConfig{Addr: sv.Addr, Weight: sv.Weight, Backup: sv.Backup, MaxConns: sv.MaxConns})
	}
	return pc
}

// upstreamDefaults fills what the file left out with the proxy's defaults.
func (u *Upstream) applyDefaults() {
	if u.Policy == "" {
		u.Policy = "round_robin"
	}
	if u.Policy == "hash" && u.HashKey == "" {
		u.HashKey = "client_ip"
	}
	if u.MaxFails == nil {
		n := proxy.DefaultMaxFails
		u.MaxFails = &n
	}
	if u.Retries == nil {
		n := proxy.DefaultRetries
		u.Retries = &n
	}
	setDur(&u.FailTimeout, u.FailTimeout != 0, proxy.DefaultFailTimeout)
	setDur(&u.ConnectTimeout, u.ConnectTimeout != 0, proxy.DefaultConnectTimeout)
	setDur(&u.ResponseHeaderTimeout, u.ResponseHeaderTimeout != 0, proxy.DefaultResponseHeaderTimeout)
	setDur(&u.IdleTimeout, u.IdleTimeout != 0, proxy.DefaultIdleConnTimeout)
	if u.MaxIdle == 0 {
		u.MaxIdle = proxy.DefaultMaxIdleConnsPerServer
	}
	if u.RetryBodyMax == 0 {
		u.RetryBodyMax = tomlconf.Size(proxy.DefaultRetryBodyMax)
	}
	for i := range u.Servers {
		if u.Servers[i].Weight == 0 {
			u.Servers[i].Weight = 1
		}
	}
	if u.Protocol == "" {
		u.Protocol = proxy.ProtoHTTP1
	}
	h := &u.Health
	if h.Path != "" || h.TCP || h.GRPC {
		setDur(&h.Interval, h.Interval != 0, proxy.DefaultHealthInterval)
		// The default timeout never exceeds the interval the user chose.
		setDur(&h.Timeout, h.Timeout != 0, min(proxy.DefaultHealthTimeout, h.Interval.D()))
		if h.Rise == 0 {
			h.Rise = proxy.DefaultHealthRise
		}
		if h.Fall == 0 {
			h.Fall = proxy.DefaultHealthFall
		}
	}
}

// validateUpstreams reports every problem the proxy package finds in each
// upstream, at its key.
func (c *Config) validateUpstreams(bad func(string, string, ...any)) {
	for name, u := range c.Upstreams {
		if u == nil {
			continue
		}
		key := "upstream." + name
		checkDiscovery(bad, key, u)
		if _, err := proxyproto.ParseVersion(u.SendProxy); err != nil {
			continue // reported by validateStreams' upstream check
		}
		if h := u.Health; (h.Path != "" || h.TCP || h.GRPC) && h.Timeout > h.Interval {
			// The proxy copes (checks wait for each other); a person who
			// wrote it most likely swapped the two.
			bad(key+".health.timeout", "timeout %v is longer than the interval %v", h.Timeout, h.Interval)
		}
		for _, err := range unjoinErrors(u.ProxyConfig(name).Validate()) {
			var fe *proxy.FieldError
			if errors.As(err, &fe) {
				bad(key+"."+fe.Field, "%v", fe.Err)
			} else {
				bad(key, "%v", err)
			}
		}
	}
}

func unjoinErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoinErrors(e)...)
		}
		return out
	}
	return []error{err}
}
