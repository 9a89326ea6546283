package oauth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// TokenStore is where replicas share each account's current token pair and its refresh lock.
// Both implementations pass the same contract test.
type TokenStore interface {
	// Lock takes the account's refresh lock for owner unless someone holds it; it expires after
	// ttl so a replica that dies holding it blocks nobody for longer.
	Lock(ctx context.Context, account, owner string, ttl time.Duration) (bool, error)
	// Unlock releases the lock only if owner still holds it (compare-and-delete).
	Unlock(ctx context.Context, account, owner string) error
	// Get returns the stored pair and its version; version 0 (and no error) when none is stored.
	Get(ctx context.Context, account string) (Token, int64, error)
	// Put stores tok as version, only if version is greater than the stored one; otherwise it
	// returns ErrStale and leaves the store unchanged.
	Put(ctx context.Context, account string, tok Token, version int64) error
}

// ErrStale is returned by TokenStore.Put when the store already holds that version or a newer one.
var ErrStale = errors.New("token store holds a newer version")

// MemoryTokenStore is the single-process TokenStore.
type MemoryTokenStore struct {
	now func() time.Time

	mu     sync.Mutex
	tokens map[string]memToken // guarded by mu
	locks  map[string]memLock  // guarded by mu
}

type memToken struct {
	tok Token
	ver int64
}

type memLock struct {
	owner string
	until time.Time
}

var _ TokenStore = (*MemoryTokenStore)(nil)

// NewMemoryTokenStore returns an empty in-memory store.
func NewMemoryTokenStore() *MemoryTokenStore {
	return &MemoryTokenStore{now: time.Now, tokens: map[string]memToken{}, locks: map[string]memLock{}}
}

// Lock implements TokenStore.
func (s *MemoryTokenStore) Lock(_ context.Context, account, owner string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if l, ok := s.locks[account]; ok && now.Before(l.until) {
		return false, nil
	}
	s.locks[account] = memLock{owner: owner, until: now.Add(ttl)}
	return true, nil
}

// Unlock implements TokenStore.
func (s *MemoryTokenStore) Unlock(_ context.Context, account, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[account]; ok && l.owner == owner {
		delete(s.locks, account)
	}
	return nil
}

// Get implements TokenStore.
func (s *MemoryTokenStore) Get(_ context.Context, account string) (Token, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[account]
	if !ok {
		return Token{}, 0, nil
	}
	return t.tok.clone(), t.ver, nil
}

// Put implements TokenStore.
func (s *MemoryTokenStore) Put(_ context.Context, account string, tok Token, version int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version <= s.tokens[account].ver {
		return ErrStale
	}
	s.tokens[account] = memToken{tok: tok.clone(), ver: version}
	return nil
}

// RedisTokenStore keeps tokens and locks in Redis under {prefix}:oauth:token:NAME (a hash of
// version and payload) and {prefix}:oauth:lock:NAME. The payload is AES-256-GCM encrypted
// (key = SHA-256 of store.encryption_key, the account name as additional data) when a key is
// set, so a Redis dump alone reveals no token.
type RedisTokenStore struct {
	rdb    redis.UniversalClient
	prefix string
	aead   cipher.AEAD // nil: plaintext
}

var _ TokenStore = (*RedisTokenStore)(nil)

// tokenKeyTTL bounds how long an unused account's pair stays in Redis; every Put renews it.
const tokenKeyTTL = 90 * 24 * time.Hour

// NewRedisTokenStore returns a store on client. prefix is store.redis.prefix (default
// "claude-lb"); encryptionKey is store.encryption_key, nil or empty for none.
func NewRedisTokenStore(client redis.UniversalClient, prefix string, encryptionKey []byte) *RedisTokenStore {
	if prefix == "" {
		prefix = "claude-lb"
	}
	s := &RedisTokenStore{rdb: client, prefix: prefix}
	if len(encryptionKey) > 0 {
		key := sha256.Sum256(encryptionKey)
		block, err := aes.NewCipher(key[:])
		if err != nil {
			panic(err) // a 32-byte key is always valid
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			panic(err)
		}
		s.aead = aead
	}
	return s
}

func (s *RedisTokenStore) tokenKey(account string) string {
	return "{" + s.prefix + "}:oauth:token:" + account
}

func (s *RedisTokenStore) lockKey(account string) string {
	return "{" + s.prefix + "}:oauth:lock:" + account
}

// unlockScript deletes the lock only if it still holds the caller's owner token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// putScript stores version ARGV[1] with payload ARGV[2] (format ARGV[3]) only if it is newer
// than the stored version; ARGV[4] is the key's TTL in milliseconds.
var putScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local v = tonumber(ARGV[1])
if v <= cur then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', ARGV[2], 'f', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// Lock implements TokenStore.
func (s *RedisTokenStore) Lock(ctx context.Context, account, owner string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.lockKey(account), owner, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("redis lock: %w", err)
	}
	return ok, nil
}

// Unlock implements TokenStore.
func (s *RedisTokenStore) Unlock(ctx context.Context, account, owner string) error {
	if err := unlockScript.Run(ctx, s.rdb, []string{s.lockKey(account)}, owner).Err(); err != nil {
		return fmt.Errorf("redis unlock: %w", err)
	}
	return nil
}

const (
	formatJSON   = "json"
	formatAESGCM = "aesgcm"
)

// Get implements TokenStore.
func (s *RedisTokenStore) Get(ctx context.Context, account string) (Token, int64, error) {
	vals, err := s.rdb.HMGet(ctx, s.tokenKey(account), "v", "t", "f").Result()
	if err != nil {
		return Token{}, 0, fmt.Errorf("redis get token: %w", err)
	}
	vs, _ := vals[0].(string)
	payload, _ := vals[1].(string)
	format, _ := vals[2].(string)
	if vs == "" {
		return Token{}, 0, nil
	}
	ver, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return Token{}, 0, fmt.Errorf("redis token of account %q: bad version", account)
	}
	plain := []byte(payload)
	switch format {
	case formatAESGCM:
		if s.aead == nil {
			return Token{}, 0, fmt.Errorf("redis token of account %q is encrypted but store.encryption_key is not set", account)
		}
		ns := s.aead.NonceSize()
		if len(plain) < ns {
			return Token{}, 0, fmt.Errorf("redis token of account %q: ciphertext too short", account)
		}
		plain, err = s.aead.Open(nil, plain[:ns], plain[ns:], []byte(account))
		if err != nil {
			return Token{}, 0, fmt.Errorf("redis token of account %q cannot be decrypted: is store.encryption_key the one the other replicas use?", account)
		}
	case formatJSON, "":
		// plaintext (written before an encryption key was set: the next Put encrypts it)
	default:
		return Token{}, 0, fmt.Errorf("redis token of account %q: unknown format %q", account, format)
	}
	var tok Token
	if err := json.Unmarshal(plain, &tok); err != nil {
		return Token{}, 0, fmt.Errorf("redis token of account %q is not valid JSON", account)
	}
	return tok, ver, nil
}

// Put implements TokenStore.
func (s *RedisTokenStore) Put(ctx context.Context, account string, tok Token, version int64) error {
	plain, err := json.Marshal(tok)
	if err != nil {
		return fmt.Errorf("encode token: %w", err)
	}
	payload, format := plain, formatJSON
	if s.aead != nil {
		nonce := make([]byte, s.aead.NonceSize())
		_, _ = rand.Read(nonce)
		payload = s.aead.Seal(nonce, nonce, plain, []byte(account))
		format = formatAESGCM
	}
	n, err := putScript.Run(ctx, s.rdb, []string{s.tokenKey(account)},
		version, payload, format, tokenKeyTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("redis put token: %w", err)
	}
	if n == 0 {
		return ErrStale
	}
	return nil
}
