// The one small cryptography interface of the native core (docs/security.md, "Encryption"): AEAD (AES-256-GCM)
// with counter nonces, X25519 and HKDF-SHA256 / HMAC-SHA256. No cipher code of ours: crypto.cpp implements it
// over OpenSSL 3's EVP API. In the addon on Linux that is the OpenSSL Node itself exports (headers from Node's
// include dir, symbols from the node binary); the C++ tests link the system libcrypto (Debian libssl-dev). A build
// without OpenSSL (the mingw-w64 Windows build today) leaves crypto.cpp out and defines no TCCL_HAVE_CRYPTO: code
// that uses this interface is compiled only where TCCL_HAVE_CRYPTO is 1 (docs/platforms.md: what each OS uses).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace tccl::crypto {

constexpr size_t kKeyBytes = 32;
constexpr size_t kTagBytes = 16;
constexpr size_t kNonceBytes = 12;
using Key = std::array<uint8_t, kKeyBytes>;
using Nonce = std::array<uint8_t, kNonceBytes>;

/** What implements this interface in this build, e.g. "OpenSSL 3.0.19 19 Jan 2026". */
const char* backend();

/**
 * AES-256-GCM under one key (one direction of one connection). The nonce of message `counter` is 4 zero bytes
 * and the counter big-endian: the caller numbers its messages 0, 1, 2, ... and never reuses a number under one
 * key (a connection's two directions have two keys). Not thread-safe: one per direction, used by one thread.
 */
class Aead {
 public:
  explicit Aead(const Key& key);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  /** Encrypts `n` bytes of `in` into `out` (n bytes) and writes the tag to `tag`; false on a library failure. */
  bool seal(const Nonce& nonce, const uint8_t* aad, size_t aadLen, const uint8_t* in, size_t n, uint8_t* out, uint8_t* tag);
  /** Decrypts and checks the tag; false (and `out` to be discarded) when the tag fails. */
  bool open(const Nonce& nonce, const uint8_t* aad, size_t aadLen, const uint8_t* in, size_t n, const uint8_t* tag, uint8_t* out);

  static Nonce counterNonce(uint64_t counter);

 private:
  Key key_;
  void* enc_ = nullptr;  // EVP_CIPHER_CTX*, keyed once
  void* dec_ = nullptr;
};

/** A fresh X25519 key pair from the library's CSPRNG; false on a library failure. */
bool x25519Keygen(Key& priv, Key& pub);
/** The public key of a private key. */
bool x25519Public(const Key& priv, Key& pub);
/** X25519(priv, peerPub); false when it fails, including a low-order peer key (an all-zero shared secret). */
bool x25519(const Key& priv, const Key& peerPub, Key& shared);

/** HKDF-SHA256 (RFC 5869): `outLen` bytes (at most 255 * 32) from ikm, salt (may be empty) and info. */
bool hkdfSha256(const uint8_t* ikm, size_t ikmLen, const uint8_t* salt, size_t saltLen, const uint8_t* info, size_t infoLen, uint8_t* out,
                size_t outLen);
/** HMAC-SHA256. */
bool hmacSha256(const uint8_t* key, size_t keyLen, const uint8_t* data, size_t n, uint8_t out[32]);
/** Compares in constant time. */
bool equal(const uint8_t* a, const uint8_t* b, size_t n);
/** Zeroes secret bytes in a way the compiler keeps. */
void wipe(void* p, size_t n);

}  // namespace tccl::crypto
