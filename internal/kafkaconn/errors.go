package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluice-dev/sluice/internal/config"
)

// ErrAuth is wrapped by SecurityError when the brokers rejected the SASL
// credentials or mechanism.
var ErrAuth = errors.New("kafka: SASL authentication failed")

// ErrTLS is wrapped by SecurityError when the TLS handshake failed.
var ErrTLS = errors.New("kafka: TLS failed")

// SecurityError returns err, from a first request of cl such as Ping,
// explained with the variables to check when it is a TLS or SASL failure;
// nil when it is something else (unreachable broker, cancelled context...).
//
// It is prompt: franz-go does not retry a rejected SASL authentication
// (only a re-authentication, once), so a wrong password fails the first
// request at once rather than at the caller's deadline. Brokers answer a
// bad password with SASL_AUTHENTICATION_FAILED; some just close the
// connection, which cl's hook (added by Security) tells from other EOFs.
func SecurityError(cl *kgo.Client, err error) error {
	p := config.Prefix
	var (
		eof    *kgo.ErrFirstReadEOF
		verify *tls.CertificateVerificationError
		host   x509.HostnameError
		auth   x509.UnknownAuthorityError
		cert   x509.CertificateInvalidError
		record tls.RecordHeaderError
		op     *net.OpError
	)
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return nil
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("%w: check %s_KAFKA_SASL_USERNAME and %s_KAFKA_SASL_PASSWORD (and %s_KAFKA_SASL_MECHANISM): %w", ErrAuth, p, p, p, err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism), errors.Is(err, kerr.IllegalSaslState):
		return fmt.Errorf("%w: check %s_KAFKA_SASL_MECHANISM: %w", ErrAuth, p, err)
	case saslFailed(cl) && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: the broker closed the connection during authentication: check %s_KAFKA_SASL_USERNAME and %s_KAFKA_SASL_PASSWORD (and %s_KAFKA_SASL_MECHANISM): %w", ErrAuth, p, p, p, err)
	case errors.As(err, &host):
		return fmt.Errorf("%w: the broker's certificate is not for the name dialed: check %s_KAFKA_TLS_SERVER_NAME and %s_BROKERS: %w", ErrTLS, p, p, err)
	case errors.As(err, &verify), errors.As(err, &auth), errors.As(err, &cert):
		return fmt.Errorf("%w: the broker's certificate is not trusted: check %s_KAFKA_TLS_CA_FILE: %w", ErrTLS, p, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: the broker does not speak TLS: check %s_KAFKA_TLS and the broker's listener: %w", ErrTLS, p, err)
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert from the broker
		return fmt.Errorf("%w: the broker refused the TLS session (a client certificate missing or not trusted?): check %s_KAFKA_TLS_CERT_FILE and %s_KAFKA_TLS_KEY_FILE: %w", ErrTLS, p, p, err)
	case errors.As(err, &eof):
		// franz-go's guess, TLS mismatch or SASL missing, is in err.
		return fmt.Errorf("check %s_KAFKA_TLS and %s_KAFKA_SASL_MECHANISM: %w", p, p, err)
	}
	return nil
}

// saslWatch is a hook that remembers whether the latest SASL exchange
// with a broker broke off (the broker closed the connection).
type saslWatch struct{ failed atomic.Bool }

var (
	_ kgo.HookBrokerRead  = (*saslWatch)(nil)
	_ kgo.HookBrokerWrite = (*saslWatch)(nil)
)

func (w *saslWatch) observe(key int16, err error) {
	if key == int16(kmsg.SASLHandshake) || key == int16(kmsg.SASLAuthenticate) {
		w.failed.Store(err != nil)
	}
}

// OnBrokerRead implements kgo.HookBrokerRead.
func (w *saslWatch) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	w.observe(key, err)
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (w *saslWatch) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	w.observe(key, err)
}

// saslFailed reports whether cl's latest SASL exchange broke off.
func saslFailed(cl *kgo.Client) bool {
	if cl == nil {
		return false
	}
	hooks, _ := cl.OptValue(kgo.WithHooks).([]kgo.Hook)
	for _, h := range hooks {
		if w, ok := h.(*saslWatch); ok && w.failed.Load() {
			return true
		}
	}
	return false
}
