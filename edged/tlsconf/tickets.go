package tlsconf

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync"
	"time"
)

// Session tickets are sealed with our own keys, rotated every
// ticketRotation and accepted for one rotation more, so a ticket key
// compromise exposes at most two rotations of resumed sessions (testssl
// asks for less than a day; crypto/tls's own keys live 7 days). Doing it
// in WrapSession/UnwrapSession rather than SetSessionTicketKeys means every
// Clone of the config (http.Server.ServeTLS clones it) rotates too.
const ticketRotation = 12 * time.Hour

type ticketKeys struct {
	mu   sync.RWMutex
	aead [2]cipher.AEAD // current, previous
}

func newTicketKeys() (*ticketKeys, error) {
	k := &ticketKeys{}
	if err := k.rotate(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *ticketKeys) rotate() error {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("making a session ticket key: %w", err)
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return err
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.aead[1], k.aead[0] = k.aead[0], a
	k.mu.Unlock()
	return nil
}

// wrap is tls.Config.WrapSession: nonce || AES-256-GCM(session).
func (k *ticketKeys) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	plain, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	k.mu.RLock()
	a := k.aead[0]
	k.mu.RUnlock()
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(plain)+a.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return a.Seal(out, out, plain, nil), nil
}

// unwrap is tls.Config.UnwrapSession; a ticket it cannot open (old key,
// garbage) just means a full handshake.
func (k *ticketKeys) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	k.mu.RLock()
	keys := k.aead
	k.mu.RUnlock()
	for _, a := range keys {
		if a == nil || len(identity) < a.NonceSize()+a.Overhead() {
			continue
		}
		n := a.NonceSize()
		plain, err := a.Open(nil, identity[:n], identity[n:], nil)
		if err != nil {
			continue
		}
		ss, err := tls.ParseSessionState(plain)
		if err != nil {
			return nil, nil
		}
		return ss, nil
	}
	return nil, nil
}
