package email

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// secretKeyFile is the default name of the key that seals mailbox passwords, inside the data directory.
const secretKeyFile = "email-secret.key"

// sealedPrefix marks the format of a sealed secret, so the scheme can change later without guessing.
const sealedPrefix = "v1:"

// Sealer encrypts secrets at rest with AES-256-GCM under a key kept in a file of its own (mode 0600), so a copy
// of the database alone does not reveal any mailbox password.
type Sealer struct {
	path string

	once sync.Once
	aead cipher.AEAD
	err  error
}

// NewSealer returns a sealer whose key lives at path; the file is created with a random key on first use.
func NewSealer(path string) *Sealer { return &Sealer{path: path} }

// Path is the key file's location.
func (s *Sealer) Path() string { return s.path }

func (s *Sealer) load() (cipher.AEAD, error) {
	s.once.Do(func() {
		key, err := readOrCreateKey(s.path)
		if err != nil {
			s.err = err
			return
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			s.err = fmt.Errorf("secret key %s: %w", s.path, err)
			return
		}
		s.aead, s.err = cipher.NewGCM(block)
	})
	return s.aead, s.err
}

func readOrCreateKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate secret key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create directory for secret key: %w", err)
		}
		// O_EXCL: if two processes race, one wins and the other reads the winner's key below.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
			cerr := f.Close()
			if werr != nil || cerr != nil {
				_ = os.Remove(path)
				return nil, fmt.Errorf("write secret key %s: %w", path, errors.Join(werr, cerr))
			}
			return key, nil
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create secret key %s: %w", path, err)
		}
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret key %s: %w", path, err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("secret key %s is not 32 bytes of base64", path)
	}
	return key, nil
}

// Seal encrypts plaintext; the result is printable and safe to store in JSON metadata.
func (s *Sealer) Seal(plaintext string) (string, error) {
	aead, err := s.load()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("generate nonce: %w", err)
	}
	out := aead.Seal(nonce, nonce, []byte(plaintext), nil)
	return sealedPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// ErrBadSecret is returned by Open when a sealed value is corrupt or was sealed with another key.
var ErrBadSecret = errors.New("sealed secret cannot be opened (corrupt, or the key file changed)")

// Open decrypts a value made by Seal.
func (s *Sealer) Open(sealed string) (string, error) {
	aead, err := s.load()
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(sealed, sealedPrefix)
	if !ok {
		return "", ErrBadSecret
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(raw) < aead.NonceSize() {
		return "", ErrBadSecret
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], nil)
	if err != nil {
		return "", ErrBadSecret
	}
	return string(plain), nil
}
