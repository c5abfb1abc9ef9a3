package tlsconf

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// The internal CA: a root (10 years) that users may trust, an intermediate
// (1 year, replaced when a month is left) that signs short-lived leaves.
// All of it lives in the certificate storage under internal-ca/ (a
// directory's files are mode 0600; in etcd, under the cluster prefix), so
// every node of a cluster signs with the same CA; the root certificate is
// also exported to the local storage directory as internal-ca/root.crt.
// The root key is kept because the intermediate must be re-signed.
const (
	internalIssuerKey     = "internal"
	internalDir           = "internal-ca"
	rootLifetime          = 10 * 365 * 24 * time.Hour
	intermediateLifetime  = 365 * 24 * time.Hour
	intermediateRenewLeft = 30 * 24 * time.Hour
)

// internalCA is a certmagic.Issuer signing leaves with a local CA, so
// certmagic stores, serves and renews internal certificates exactly like
// ACME ones.
type internalCA struct {
	dir      string
	lifetime time.Duration
	st       certmagic.Storage
	root     *x509.Certificate
	rootKey  crypto.Signer
	// interSubject is the same for every intermediate (renewed yearly),
	// so leaves can be recognised without a lock.
	interSubject []byte

	mu       sync.Mutex // guards the intermediate, replaced while running
	inter    *x509.Certificate
	interKey crypto.Signer
	interPEM []byte
}

var _ certmagic.Issuer = (*internalCA)(nil)

// loadOrCreateInternalCA loads the CA from the storage, creating what is
// missing; the storage lock keeps several edged on one storage (a shared
// directory or etcd) from racing. The root certificate (public) is also
// written to exportDir/internal-ca/root.crt for users to trust.
func loadOrCreateInternalCA(ctx context.Context, st certmagic.Storage, exportDir string, lifetime time.Duration) (*internalCA, error) {
	dir := filepath.Join(exportDir, internalDir)
	ca := &internalCA{dir: dir, lifetime: lifetime, st: st}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := st.Lock(lctx, "internal-ca")
	cancel()
	if err != nil {
		// A storage that cannot lock (a cluster cut off from etcd) may
		// still read: a CA that exists is used as it is, one that does not
		// is not made without the lock.
		if ca.root, ca.rootKey, err = readPair(ctx, st, "root"); err == nil {
			ca.inter, ca.interKey, err = readPair(ctx, st, "intermediate")
		}
		if err != nil || ca.exportRoot() != nil {
			return nil, fmt.Errorf("locking the internal CA in the certificate storage, and no complete CA could be read from it: %w", err)
		}
		ca.interPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw})
		ca.interSubject = ca.inter.RawSubject
		return ca, nil
	}
	defer st.Unlock(context.WithoutCancel(ctx), "internal-ca")

	root, rootKey, err := readPair(ctx, st, "root")
	if errors.Is(err, fs.ErrNotExist) {
		root, rootKey, err = newCACert(nil, nil, "edged internal root CA", rootLifetime, 1)
		if err == nil {
			err = writePair(ctx, st, "root", root, rootKey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("internal CA root in the certificate storage (%s): %w", internalDir, err)
	}
	ca.root, ca.rootKey = root, rootKey
	if err := ca.exportRoot(); err != nil {
		return nil, err
	}
	if err := ca.loadIntermediate(ctx); err != nil {
		return nil, err
	}
	ca.interSubject = ca.inter.RawSubject
	return ca, nil
}

// exportRoot writes the root certificate where users find it, when the
// copy there is missing or another.
func (ca *internalCA) exportRoot() error {
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
	if old, err := os.ReadFile(ca.RootFile()); err == nil && string(old) == string(pemBytes) {
		return nil
	}
	if err := os.MkdirAll(ca.dir, 0o700); err != nil {
		return fmt.Errorf("creating internal CA directory: %w", err)
	}
	return writeAtomic(ca.RootFile(), pemBytes, 0o644)
}

// loadIntermediate reads the intermediate, replacing it when it is near
// its end or not signed by the root. Callers hold the storage lock.
func (ca *internalCA) loadIntermediate(ctx context.Context) error {
	inter, interKey, err := readPair(ctx, ca.st, "intermediate")
	if err == nil && (time.Until(inter.NotAfter) < intermediateRenewLeft || inter.CheckSignatureFrom(ca.root) != nil) {
		err = fs.ErrNotExist // replace it
	}
	if errors.Is(err, fs.ErrNotExist) {
		inter, interKey, err = newCACert(ca.root, ca.rootKey, "edged internal intermediate CA", intermediateLifetime, 0)
		if err == nil {
			err = writePair(ctx, ca.st, "intermediate", inter, interKey)
		}
	}
	if err != nil {
		return fmt.Errorf("internal CA intermediate in the certificate storage (%s): %w", internalDir, err)
	}
	ca.mu.Lock()
	ca.inter, ca.interKey = inter, interKey
	ca.interPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw})
	ca.mu.Unlock()
	return nil
}

// intermediate returns the current intermediate, replacing it first if a
// long-running process has brought it near its end.
func (ca *internalCA) intermediate(ctx context.Context) (*x509.Certificate, crypto.Signer, []byte, error) {
	ca.mu.Lock()
	inter, key, pemBytes := ca.inter, ca.interKey, ca.interPEM
	ca.mu.Unlock()
	if time.Until(inter.NotAfter) >= intermediateRenewLeft {
		return inter, key, pemBytes, nil
	}
	if err := ca.st.Lock(ctx, "internal-ca"); err != nil {
		return nil, nil, nil, fmt.Errorf("locking the internal CA: %w", err)
	}
	err := ca.loadIntermediate(ctx)
	ca.st.Unlock(context.WithoutCancel(ctx), "internal-ca")
	if err != nil {
		return nil, nil, nil, err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.inter, ca.interKey, ca.interPEM, nil
}

// RootFile is the path of the root certificate users may trust.
func (ca *internalCA) RootFile() string { return filepath.Join(ca.dir, "root.crt") }

func (ca *internalCA) IssuerKey() string { return internalIssuerKey }

// Issue signs the CSR's names for ca.lifetime, capped by the intermediate.
func (ca *internalCA) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("internal CA: checking CSR signature: %w", err)
	}
	inter, interKey, interPEM, err := ca.intermediate(ctx)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ca.lifetime)
	if notAfter.After(inter.NotAfter) {
		notAfter = inter.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-time.Minute), // small clock skew
		NotAfter:              notAfter,
		DNSNames:              csr.DNSNames,
		IPAddresses:           csr.IPAddresses,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, csr.PublicKey, interKey)
	if err != nil {
		return nil, fmt.Errorf("internal CA: signing certificate for %v: %w", csr.DNSNames, err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, interPEM...)
	return &certmagic.IssuedCertificate{Certificate: chain}, nil
}

func randSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	return s, nil
}

// newCACert makes a CA certificate; parent nil means self-signed.
func newCACert(parent *x509.Certificate, parentKey crypto.Signer, cn string, life time.Duration, maxPath int) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"edged"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing CA certificate %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// pairKey is the storage key of a CA certificate or key.
func pairKey(name, ext string) string { return internalDir + "/" + name + "." + ext }

func readPair(ctx context.Context, st certmagic.Storage, name string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := st.Load(ctx, pairKey(name, "crt"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := st.Load(ctx, pairKey(name, "key"))
	if err != nil {
		return nil, nil, err
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, nil, fmt.Errorf("%s.crt: no PEM certificate", name)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s.crt: %w", name, err)
	}
	priv, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s.key: %w", name, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s.key: not a signing key", name)
	}
	return cert, signer, nil
}

// writePair stores the key first and the certificate last (each store is
// atomic), so a crash never leaves a certificate without its key.
func writePair(ctx context.Context, st certmagic.Storage, name string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return err
	}
	if err := st.Store(ctx, pairKey(name, "key"), keyPEM); err != nil {
		return err
	}
	return st.Store(ctx, pairKey(name, "crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
