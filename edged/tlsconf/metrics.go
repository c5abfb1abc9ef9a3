package tlsconf

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the certificate metrics edged exports on /metrics. A nil
// *Metrics is valid and records nothing.
type Metrics struct {
	expiry   *prometheus.GaugeVec
	overdue  *prometheus.GaugeVec
	failing  *prometheus.GaugeVec
	issuance *prometheus.CounterVec
	onDemand *prometheus.CounterVec
}

// NewMetrics registers the certificate metrics with reg (nil: not
// registered, e.g. for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_tls_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the certificate served for a host, as a Unix time.",
		}, []string{"host", "mode"}),
		overdue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_tls_certificate_renewal_overdue",
			Help: "1 when a host's certificate is close to expiry and has not been renewed.",
		}, []string{"host", "mode"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_tls_certificate_failing",
			Help: "1 when the last attempt to obtain or renew a host's certificate failed.",
		}, []string{"host", "mode"}),
		issuance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_tls_certificate_issuance_total",
			Help: "Attempts to obtain (kind=obtain) or renew (kind=renew) a certificate, by result.",
		}, []string{"kind", "result"}),
		onDemand: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_tls_on_demand_decisions_total",
			Help: "On-demand certificate decisions: stored, allowed, refused, refused_cached, ask_error, ask_limited (ask_rate, ask_concurrency), rate_limited (issuance budget), not_public, invalid.",
		}, []string{"decision"}),
	}
	if reg != nil {
		reg.MustRegister(m.expiry, m.overdue, m.failing, m.issuance, m.onDemand)
	}
	return m
}

func (m *Metrics) setExpiry(host, mode string, notAfter time.Time, overdue bool) {
	if m == nil {
		return
	}
	m.expiry.WithLabelValues(host, mode).Set(float64(notAfter.Unix()))
	v := 0.0
	if overdue {
		v = 1
	}
	m.overdue.WithLabelValues(host, mode).Set(v)
}

func (m *Metrics) setFailing(host, mode string, failing bool) {
	if m == nil {
		return
	}
	v := 0.0
	if failing {
		v = 1
	}
	m.failing.WithLabelValues(host, mode).Set(v)
}

func (m *Metrics) issued(renewal, ok bool) {
	if m == nil {
		return
	}
	kind, result := "obtain", "success"
	if renewal {
		kind = "renew"
	}
	if !ok {
		result = "failure"
	}
	m.issuance.WithLabelValues(kind, result).Inc()
}

func (m *Metrics) decision(d string) {
	if m == nil {
		return
	}
	m.onDemand.WithLabelValues(d).Inc()
}

func (m *Metrics) forget(host, mode string) {
	if m == nil {
		return
	}
	m.expiry.DeleteLabelValues(host, mode)
	m.overdue.DeleteLabelValues(host, mode)
	m.failing.DeleteLabelValues(host, mode)
}
